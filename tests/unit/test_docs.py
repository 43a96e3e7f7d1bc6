"""The documents name only tests, settings and commands that exist."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.unit.test_deployment_files import known_variables, project_commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").glob("*/README.md")),
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_a_document_names_exists(doc: Path) -> None:
    """`tests/file.py::test_name` (and the `…::name` shorthand after it) point at real tests."""
    current: Path | None = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`…::(\w+)`", doc.read_text()):
        path, name, short = match.groups()
        if path:
            current = ROOT / path
            assert current.exists(), path
        name = name or short
        if name:
            assert current is not None and f"def {name}(" in current.read_text(), (current, name)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_variable_a_document_names_is_a_setting(doc: Path) -> None:
    """Every REMINDERS_* variable in the docs is one the settings read (test variables aside)."""
    named = set(re.findall(r"\bREMINDERS_[A-Z_]+[A-Z]\b", doc.read_text()))
    named -= {"REMINDERS_TEST_POSTGRES_URL", "REMINDERS_TEST_REDIS_URL", "REMINDERS_TEST_FAULT"}
    prefixes = {v.rsplit("_", 1)[0] for v in known_variables()}  # REMINDERS_SMTP_HOST, `_PORT`
    assert not {v for v in named - known_variables() if v not in prefixes}, doc.name


def test_the_readme_names_every_setting() -> None:
    """Each REMINDERS_* variable has its row in the README's configuration table (a row may
    name a sibling by its last part, as in `REMINDERS_SMTP_HOST`, `_PORT`)."""
    readme = (ROOT / "README.md").read_text()
    missing = {
        v
        for v in known_variables()
        if v not in readme and f"`_{v.rsplit('_', 1)[1]}`" not in readme
    }
    assert not missing


def test_every_command_the_readme_names_exists() -> None:
    """The README's command table lists real `reminders` commands."""
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"\| `reminders ([a-z-]+(?: [a-z]+)?)", readme)
    assert named
    for command in named:
        assert command.split()[0] in project_commands(), command


# The documents describe the product as it is; what changed over time is CHANGELOG.md's.
HISTORY_FREE = [*DOCS, ROOT / "CHANGELOG.md"]
FIX_LABEL = re.compile(r"\bF\d{1,2}\b")
STORIES = {
    "a session": re.compile(
        r"\b(?:this|that|each|every|earlier|previous|last|next|working|new) sessions?\b", re.I
    ),
    "the seed": re.compile(r"\bthe seed\b", re.I),
    "a machine story": re.compile(
        r"\b(?:first|second|third|fourth|fifth|sixth|earlier|slower|faster|fastest|slowest"
        r"|latest|previous|new|another) machines?\b",
        re.I,
    ),
    "a run's clock time": re.compile(
        r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?![:\d])"  # 2026-11-29 06:19, no seconds
        r"|\b\d{1,2}:\d{2}(?: UTC)?,? (?:full |relay-only |scan )?run\b"  # the 06:19 run
        r"|\bruns? (?:at|of) \d{1,2}:\d{2}\b"
    ),
    "a commit": re.compile(r"\bcommits? `?[0-9a-f]{7,40}\b"),
}


@pytest.mark.parametrize("doc", HISTORY_FREE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_carries_a_fix_label(doc: Path) -> None:
    """Fixes are described by what they do, never by labels such as F21."""
    assert not FIX_LABEL.findall(doc.read_text())


@pytest.mark.parametrize("doc", HISTORY_FREE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_tells_the_story_of_its_sessions(doc: Path) -> None:
    """No sessions, machines in order, "the seed", clock times of runs or commits."""
    text = doc.read_text()
    found = {what: pattern.findall(text) for what, pattern in STORIES.items()}
    assert not {what: hits for what, hits in found.items() if hits}, doc.name


def test_the_performance_page_fits_on_200_lines() -> None:
    """docs/performance.md stays one page: how to run, one table, targets, bounds, the plan."""
    assert len((ROOT / "docs" / "performance.md").read_text().splitlines()) <= 200


def test_the_naive_hourly_design_is_defined_once() -> None:
    """The baseline has one definition, in design.md, that the other pages point to."""
    headings = [
        doc.name
        for doc in DOCS
        for line in doc.read_text().splitlines()
        if line.startswith("#") and line.lstrip("#").strip().lower() == "the naive hourly design"
    ]
    assert headings == ["design.md"]


DURATION = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?(?:ns|µs|us|ms|s|sec|seconds?|min|minutes?)\b|\d\s?(?:→|->)\s?\d"
)
MEASURED = re.compile(
    r"\b(?:measured|took|timed|benchmarks?|median|p50|p99|faster|slower|speed-?up)\b", re.I
)


def quotes_a_timing(paragraph: str) -> bool:
    """A measured duration: a time with a word of measurement, or two times compared.

    A single duration alone ("a retry after 30 s", "a 5 s timeout") is a setting or a bound,
    not a benchmark figure.
    """
    durations = DURATION.findall(paragraph)
    return bool(durations) and (bool(MEASURED.search(paragraph)) or len(durations) >= 2)


Paragraph = list[tuple[int, str]]  # (line number, text) of each line


def code_paragraphs(path: Path) -> list[Paragraph]:
    """The comment blocks and docstring paragraphs of a module, line by line."""
    source = path.read_text()
    found: list[Paragraph] = []
    block: Paragraph = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        if block and token.start[0] != block[-1][0] + 1:
            found.append(block)
            block = []
        block.append((token.start[0], token.string.lstrip("#:").strip()))
    if block:
        found.append(block)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if docstring is None:
            continue
        block = []
        for number, text in enumerate(docstring.split("\n"), node.body[0].lineno):
            if text.strip():
                block.append((number, text.strip()))
            elif block:
                found.append(block)
                block = []
        if block:
            found.append(block)
    return found


def timed_lines(path: Path) -> list[str]:
    """`file:line: text` of each line of a paragraph that quotes a timing."""
    return [
        f"{path.relative_to(ROOT)}:{number}: {text}"
        for paragraph in code_paragraphs(path)
        if quotes_a_timing(" ".join(text for _, text in paragraph))
        for number, text in paragraph
        if DURATION.search(text)
    ]


CODE = sorted((ROOT / "worker").rglob("*.py")) + sorted((ROOT / "outbox").rglob("*.py"))


def test_the_timing_rule_tells_measurements_from_settings() -> None:
    """The rule flags measured or compared times and leaves a setting's single value alone."""
    assert quotes_a_timing("with a generic plan: 5.4 s for a batch, 0.2 s spelt this way")
    assert quotes_a_timing("building the statement took 7 ms a batch")
    assert quotes_a_timing("no-op scan 8.7 → 4.2 ms")
    assert not quotes_a_timing("a retry after 30 s should not wait for an hourly tick")
    assert not quotes_a_timing("an AMQP connection opened and closed (5 s timeout)")


def test_code_comments_quote_no_benchmark_timings() -> None:
    """Comments and docstrings under worker/ and outbox/ say why, not how long it took."""
    assert not [line for path in CODE for line in timed_lines(path)]


def test_code_comments_carry_no_fix_labels() -> None:
    """Comments and docstrings under worker/ and outbox/ name no fix label such as F21."""
    labelled = [
        f"{path.relative_to(ROOT)}:{number}: {text}"
        for path in CODE
        for paragraph in code_paragraphs(path)
        for number, text in paragraph
        if FIX_LABEL.search(text)
    ]
    assert not labelled
