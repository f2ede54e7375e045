"""Rough edges a new user hit in their first hour (issue #25), each with the test that would have caught it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from syngrpo.errors import ConfigError


def test_plugins_json_into_a_closed_pipe_stops_quietly(tmp_path):
    """`syngrpo plugins --json | head` printed a BrokenPipeError traceback once head had what it wanted. The pipe
    here is closed before the command writes, so the write fails every time, not only when head is quick."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen([sys.executable, "-m", "syngrpo.cli", "plugins", "--json"], stdout=write_end,
                            stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 141, err  # 128 + SIGPIPE, what a shell reports for a command its pipe cut short
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_an_export_is_readable_by_others_as_the_umask_says(tmp_path):
    """`syngrpo export` wrote model.safetensors with mode 0600 (transformers' temporary file), its config 0644."""
    from syngrpo.commands.export import export_policy
    from syngrpo.models.tiny_policy import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", seed=0)
    mask = os.umask(0o022)
    try:
        out = export_policy(policy, tmp_path / "export", dtype="bfloat16")
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


def test_a_run_that_fails_before_it_starts_leaves_no_run_directory_and_a_clear_error(tmp_path):
    """A policy path that does not exist was a transformers traceback (``Repo id must be in the form ...``) and
    left a run directory holding only the toy data it had drawn."""
    from syngrpo.config import QUICKSTART_CONFIG, load_train_config
    from syngrpo.train.trainer import Trainer

    cfg = load_train_config(QUICKSTART_CONFIG, ["model.policy=/nonexistent/policy", "synthesis.mode=off",
                                                "eval.at_start=false", "logging.progress=false"])
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="model.policy '/nonexistent/policy': no such directory"):
        with Trainer(cfg, run) as trainer:
            trainer.train()
    assert not run.exists()


def test_the_quickstart_installs_from_the_clone_with_the_cpu_constraints():
    """docs/quickstart.md offered `pip install syngrpo` (not published) and no constraints file, so pip could pull a
    multi-GB CUDA torch on a CPU machine; the README's one-liner had it right."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "quickstart.md").read_text(encoding="utf-8")
    installs = [line for line in page.splitlines() if line.lstrip().startswith("pip install")]
    assert installs and "pip install syngrpo" not in page
    assert all("-c constraints-cpu.txt" in line for line in installs[:1]), installs
