"""``syngrpo serve --backend NAME`` finds a server backend plugin through ``register_server_backends``; the example
of docs/hooks/server_backends.md runs as written, and an unknown backend is a clear error naming the installed ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syngrpo.cli import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "server_backends.md"


def test_the_example_backend_of_the_hook_page_serves(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    module = next(b for b in blocks if b.startswith("# threads_backend.py\n"))
    (tmp_path / "threads_backend.py").write_text(module, encoding="utf-8")
    usage = next(b for b in blocks if "import threads_backend" in b)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(usage, "server_backends.md example", "exec"), {"__name__": "docs_example"})  # noqa: S102


def test_an_unknown_backend_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--backend", "nosuch", "--port", "0", "--data-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "server backend" in err and "Traceback" not in err


def test_the_job_service_refuses_a_backend_it_cannot_run(tmp_path):
    from syngrpo.errors import ConfigError
    from syngrpo.synthesis.server.config import ServerConfig
    from syngrpo.synthesis.server.workers import JobService

    with pytest.raises(ConfigError, match="runs its workers through its own plugin"):
        JobService(ServerConfig(backend="ray", data_dir=tmp_path / "s"))
