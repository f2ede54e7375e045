"""The peers' own code, loaded for the comparison tests of this folder: TRL 1.16 and verl's ``core_algos``.

Nothing of either is copied here.  TRL comes from the ``peers`` extra (``pip install -e '.[peers]'``).
verl cannot be installed with its dependencies beside this project (verl 0.9.1 pins transformers below
5.11); its loss module imports with verl itself and the few packages ``verl-imports.txt`` lists, installed
``--no-deps`` into a folder of their own that ``PYTHONPATH`` names (``.ci/run`` does both).

A peer that is absent skips its tests with the reason and the install line.  ``SYNGRPO_REQUIRE_PEERS=1``
(CI) turns that skip into a failure, so a broken install cannot pass as a skipped test.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
INSTALL = {
    "trl": "pip install -c constraints-lock.txt -e '.[peers]'",
    "verl": f"pip install --no-deps --target DIR -r {HERE.relative_to(HERE.parents[1])}/verl-imports.txt; "
            "PYTHONPATH=DIR",
}


def _load(module: str, peer: str, version: str) -> ModuleType:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        message = f"{peer} {version} is not importable ({exc}); install it: {INSTALL[peer]}"
        if os.environ.get("SYNGRPO_REQUIRE_PEERS") == "1":
            pytest.fail(message + " (SYNGRPO_REQUIRE_PEERS=1: the peers must be here)")
        pytest.skip(message)
    return mod


@pytest.fixture(scope="session")
def trl_grpo() -> ModuleType:
    """``trl.trainer.grpo_trainer`` of TRL 1.16.0 (the version the comparisons were written against)."""
    trl = _load("trl", "trl", "1.16.0")
    assert trl.__version__ == "1.16.0", f"the comparisons read TRL 1.16.0's code; found {trl.__version__}"
    return importlib.import_module("trl.trainer.grpo_trainer")


@pytest.fixture(scope="session")
def verl_core() -> ModuleType:
    """``verl.trainer.ppo.core_algos`` of verl 0.9.1."""
    _load("verl", "verl", "0.9.1")
    from importlib.metadata import version

    assert version("verl") == "0.9.1", f"the comparisons read verl 0.9.1's code; found {version('verl')}"
    return importlib.import_module("verl.trainer.ppo.core_algos")
