"""Every named wiring mutation of issue #23 (scripts/mutate_named.py) still finds the code it mutates.

A mutation whose text moved away (a refactor of the step) silently stops testing anything: three of them went
stale when R_diversity moved into ``StepRewardScorer.add_diversity``, and one "survived" only because it mutated a
sum that no longer holds R_diversity. This check is cheap and runs in the default suite; whether each mutation is
*caught* is ``bash scripts/mutate --named`` (minutes: one wiring-test run per mutation).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutate_named", ROOT / "scripts" / "mutate_named.py")
mutate_named = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutate_named", mutate_named)  # its dataclasses look their module up
_spec.loader.exec_module(mutate_named)


@pytest.mark.parametrize("mutation", mutate_named.MUTATIONS, ids=lambda m: m.name)
def test_the_mutation_finds_exactly_one_place_to_mutate(mutation):
    source = (ROOT / mutation.file).read_text(encoding="utf-8")
    assert source.count(mutation.old) == 1, (f"{mutation.name!r}: {mutation.old!r} occurs {source.count(mutation.old)} "
                                             f"times in {mutation.file}; update scripts/mutate_named.py")
