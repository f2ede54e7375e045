"""The example plugins of docs/hooks/{synthesizers,segmenters,transports,rewards,trackers,describers,tiny_models,
dataset_formats,benchmarks}.md run as written."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("page", ["synthesizers.md", "segmenters.md", "transports.md", "rewards.md", "trackers.md",
                                  "describers.md", "tiny_models.md", "dataset_formats.md", "benchmarks.md"])
def test_the_example_plugin_of_the_page_works(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    module = next(b for b in blocks if re.match(r"# (\w+)\.py\n", b))
    name = re.match(r"# (\w+)\.py\n", module).group(1)
    (tmp_path / f"{name}.py").write_text(module, encoding="utf-8")
    usage = next(b for b in blocks if f"import {name}" in b)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        exec(compile(usage, f"{page} example", "exec"), {"__name__": "docs_example"})  # noqa: S102
    finally:
        sys.modules.pop(name, None)
