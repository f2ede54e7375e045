"""Hook documentation never drifts from the hook specs (as datasette's plugin-hook docs tests do).

For every hook spec in syngrpo/hookspecs.py there must be a page docs/hooks/<kind>.md
that mentions the hook by name, and the index docs/hooks/README.md must link it.
A missing page fails the test with the list of what is missing.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from syngrpo import hookspecs
from syngrpo.plugins import KINDS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hooks"

SPECS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "syngrpo_spec")  # set by pluggy's HookspecMarker("syngrpo")
)


def _kind(hook_name: str) -> str:
    return hook_name.removeprefix("register_")


def test_every_hook_spec_is_a_plugin_kind_and_every_kind_has_a_spec():
    assert SPECS, "no hook specs found: did the marker name change?"
    assert sorted(KINDS.values()) == SPECS


@pytest.mark.parametrize("hook_name", SPECS)
def test_every_hook_has_a_page_that_names_it(hook_name):
    page = DOCS / f"{_kind(hook_name)}.md"
    assert page.is_file(), f"{hook_name} has no documentation page: write {page.relative_to(DOCS.parent.parent)}"
    assert hook_name in page.read_text(encoding="utf-8"), f"{page.name} does not mention {hook_name}"


def test_the_hook_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = [k for k in map(_kind, SPECS) if f"({k}.md)" not in index]
    assert not missing, f"docs/hooks/README.md does not link: {missing}"


def test_report_of_missing_pages_in_one_place():
    """One assertion listing every missing page, so a reader sees the whole gap at once."""
    missing = [f"docs/hooks/{_kind(h)}.md" for h in SPECS if not (DOCS / f"{_kind(h)}.md").is_file()]
    assert not missing, f"hook pages still to write: {missing}"
