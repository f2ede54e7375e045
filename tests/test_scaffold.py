"""``syngrpo new-plugin``: the package it writes passes its own tests (CI also installs one and lists it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syngrpo.authoring.scaffold import KINDS, new_plugin, plugin_names
from syngrpo.cli import main
from syngrpo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", KINDS)
def test_the_generated_package_passes_its_own_tests(kind, tmp_path):
    root = new_plugin(f"demo_{kind}", kind=kind, out=tmp_path / "pkg")
    assert (root / "pyproject.toml").read_text().count(f'demo_{kind} = "syngrpo_demo_{kind}.plugin"') == 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), str(root)])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_the_command_writes_into_name_by_default_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "demo", "--kind", "reward"]) == 0
    assert (tmp_path / "demo" / "syngrpo_demo" / "reward.py").is_file()
    assert "pip install -e demo" in capsys.readouterr().out
    assert main(["new-plugin", "demo"]) == 2  # exists and is not empty: a clean error, nothing written
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["Demo", "1demo", "de-mo", "class", ""])
def test_names_that_cannot_be_packages_are_refused(bad):
    with pytest.raises(ConfigError, match="plugin name"):
        plugin_names(bad)


def test_names_map_to_a_distribution_and_a_package():
    assert plugin_names("demo") == ("syngrpo-demo", "syngrpo_demo")
    assert plugin_names("syngrpo_x") == ("syngrpo-x", "syngrpo_x")
