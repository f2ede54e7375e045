"""The API reference says what the code says: required and optional Task members, every page in the nav."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from syngrpo.perception.task import Task

ROOT = Path(__file__).resolve().parents[1]


def _listed(kind: str) -> set[str]:
    text = (ROOT / "docs" / "api" / "task.md").read_text(encoding="utf-8")
    sentence = re.search(rf"\*\*{kind}\*\*[^:]*:(.*?)\.\s", text, flags=re.S).group(1)
    return set(re.findall(r"`(\w+)`", sentence))


def test_required_task_members_are_exactly_the_abstract_ones():
    assert _listed("Required") == set(Task.__abstractmethods__) | {"name"}


def test_optional_task_members_are_the_public_ones_with_a_default():
    public = {n for n in vars(Task) if not n.startswith("_")} - set(Task.__abstractmethods__)
    assert _listed("Optional") == public


def test_every_api_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = str(config["nav"])
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "api").glob("*.md"))
    assert pages and all(p in nav for p in pages), [p for p in pages if p not in nav]
