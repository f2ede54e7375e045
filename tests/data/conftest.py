"""Shared fixtures of the dataset-format and benchmark tests: the tiny policy, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    from syngrpo.models.tiny_policy import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", seed=0)


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> (exit status, stdout, stderr) of ``syngrpo`` run in this process."""
    from syngrpo.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
