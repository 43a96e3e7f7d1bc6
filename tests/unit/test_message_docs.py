"""docs/messages.md shows reminders exactly as the renderer and the SMTP channel make them."""

from __future__ import annotations

from tests.support.message_example import PAGE, block_names, examples, rewrite


def test_the_examples_are_what_the_renderer_gives() -> None:
    """Every example block of the page is the renderer's output for the example task; run
    ``python -m tests.support.message_example`` after changing a template or a catalog."""
    page = PAGE.read_text(encoding="utf-8")
    assert sorted(block_names(page)) == sorted(examples())
    assert rewrite(page) == page
