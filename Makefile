# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check clean bench chaos i18n

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reminders demo

# Tests run in TEST_WORKERS processes (pytest-xdist); most of them wait on real subprocesses
# and servers, so three share two cores well. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Randomized soak: kills, broker and database restarts, a flaky receiver (docs/reliability.md).
# Not part of `make test`; CHAOS_ARGS="--seed 7 --duration 300" to vary it.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

# Benchmarks (docs/performance.md); BENCH_ARGS=--quick for a fast check.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Message catalogs (docs/messages.md): the templates' strings into messages.pot, merged into
# each language's catalog (new strings untranslated), then compiled to the .mo files shipped.
LOCALE := worker/reminders/locale
i18n: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output --omit-header \
		-o $(LOCALE)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALE)/messages.pot -d $(LOCALE) -w 100 \
		--no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date
	$(BIN)/pybabel compile -d $(LOCALE) --statistics

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check worker outbox tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm .pytest_cache .mypy_cache .ruff_cache
