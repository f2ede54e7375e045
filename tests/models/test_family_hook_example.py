"""The example plugin of docs/hooks/model_families.md runs as written (and its contract check passes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "model_families.md"


def test_the_model_families_page_example_plugin_works(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    module = next(b for b in blocks if b.startswith("# relative25.py\n"))
    (tmp_path / "relative25.py").write_text(module, encoding="utf-8")
    usage = next(b for b in blocks if "import relative25" in b)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        exec(compile(usage, "model_families.md example", "exec"), {"__name__": "docs_example"})  # noqa: S102
    finally:
        sys.modules.pop("relative25", None)
    assert "save/load" in capsys.readouterr().out
