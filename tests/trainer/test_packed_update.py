"""``algorithm.packed`` and ``optim.token_budget`` (issue 26 item 4): the step equals the padded one.

One trainer step on the tiny Qwen2.5-VL, padded scoring in one micro-batch against packed scoring in
micro-batches cut by a token budget: the rollout is the same (scoring does not touch sampling), so
the rewards are equal and the parameters after the optimizer step agree to float tolerance (AdamW
with eps 1.0, so that the first step is proportional to the gradient instead of its sign, as
``test_sharding.py`` does).
"""

from __future__ import annotations

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.train import update as update_mod
from syngrpo.train.trainer import Trainer
from syngrpo.train.update import split_by_tokens

TERMS = "rewards.terms=[{name: length}, {name: format}]"
_MICRO_BATCHES = update_mod.PolicyUpdate._micro_batches
STEP = (TERMS, "algorithm.beta=0.04", "algorithm.shared_prefix=false", "optim.adam_eps=1.0", "optim.batch_size=3")


def _one_step(cfg, run_dir, registry, monkeypatch) -> tuple[dict, dict, list]:
    chunks = []
    monkeypatch.setattr(update_mod.PolicyUpdate, "_micro_batches",
                        lambda self, *a: chunks.append(_MICRO_BATCHES(self, *a)) or chunks[-1])
    with Trainer(cfg, run_dir, registry=registry) as trainer:
        trainer.setup()
        metrics = trainer.train_step(1)
        params = {n: p.detach().clone() for n, p in trainer.bundle.base_model.named_parameters()}
    return metrics, params, chunks


def test_packed_step_by_token_budget_equals_the_padded_step(tiny_policy_dir, tmp_path, registry, config_for,
                                                             monkeypatch):
    padded_m, padded, padded_chunks = _one_step(config_for(tiny_policy_dir, *STEP), tmp_path / "padded", registry,
                                                monkeypatch)
    packed_m, packed, packed_chunks = _one_step(
        config_for(tiny_policy_dir, *STEP, "algorithm.packed=true", "optim.token_budget=1"), tmp_path / "packed",
        registry, monkeypatch)
    assert padded_chunks == [[[0, 1, 2]]]
    assert packed_chunks == [[[0], [1], [2]]]  # every prompt over the budget: one micro-batch each
    assert padded_m["reward/total"] == pytest.approx(packed_m["reward/total"], abs=1e-6)
    initial = _initial(tiny_policy_dir)
    moved = max(float((padded[n] - p0).abs().max()) for n, p0 in initial.items())
    gap = max(float((padded[n] - packed[n]).abs().max()) for n in initial)
    assert moved > 1e-6 and gap <= 1e-3 * moved, (gap, moved)
    assert packed_m["loss"] == pytest.approx(padded_m["loss"], rel=1e-4, abs=1e-6)


def _initial(policy_dir) -> dict[str, torch.Tensor]:
    from syngrpo.models.policy import load_policy

    return {n: p.detach().clone() for n, p in load_policy(policy_dir).model.named_parameters()}


def test_split_by_tokens_keeps_chunks_within_the_budget():
    sizes = [5, 3, 9, 1, 1, 20, 2]
    chunks = split_by_tokens(len(sizes), lambda c: sum(sizes[i] for i in c), 10)
    assert chunks == [[0, 1], [2, 3], [4], [5], [6]]
    # a padded cost (rows x longest) is not a sum: [1, 9] costs 2 x 9 = 18
    assert split_by_tokens(3, lambda c: len(c) * max([1, 9, 1][i] for i in c), 10) == [[0], [1], [2]]


def test_packed_with_shared_prefix_true_is_refused(tiny_policy_dir, tmp_path, registry, config_for):
    cfg = config_for(tiny_policy_dir, TERMS, "algorithm.packed=true", "algorithm.shared_prefix=true")
    with pytest.raises(ConfigError, match="algorithm.packed and algorithm.shared_prefix=true"):
        with Trainer(cfg, tmp_path / "run", registry=registry) as trainer:
            trainer.setup()
