"""The policy losses of issue #26 and the rollout correction, wired into real training steps on the tiny policy.

The maths of each is compared with the peers' code in ``tests/peers/``; here the question is whether the
trainer reaches it: a step moves the parameters through every new loss, and the correction's weights
demonstrably multiply the loss that is back-propagated (cases whose outcome is known by hand: weights of
exactly 1 leave the step as it was; weights of 0 leave nothing to learn from).
"""

from __future__ import annotations

import math

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl
from syngrpo.testing import registry_with
from syngrpo.train.preflight import check_config
from syngrpo.train.trainer import Trainer

TERMS = "rewards.terms=[{name: length}, {name: format}]"
LOGPROBS = "rollout.engine_options={return_logprobs: true}"


def _one_step(cfg, run_dir, registry):
    trainer = Trainer(cfg, run_dir, registry=registry)
    try:
        trainer.setup()
        before = {n: p.detach().clone() for n, p in trainer.bundle.model.named_parameters() if p.requires_grad}
        metrics = trainer.train_step(1)
        after = {n: p.detach().clone() for n, p in trainer.bundle.model.named_parameters() if p.requires_grad}
        changed = [n for n in before if not torch.equal(before[n], after[n])]
        return metrics, changed, after
    finally:
        trainer.close()


@pytest.mark.parametrize("loss", ["gspo", "gspo_token", "cispo", "sapo", "clip_cov", "kl_cov"])
def test_one_step_through_each_new_policy_loss_changes_parameters(loss, tiny_policy_dir, tmp_path, registry,
                                                                    config_for):
    # two updates per batch: the second sees a ratio != 1, where the variants differ from GRPO
    cfg = config_for(tiny_policy_dir, TERMS, f"algorithm.policy_loss={{name: {loss}}}", "algorithm.updates_per_batch=2")
    metrics, changed, after = _one_step(cfg, tmp_path, registry)
    assert changed, "no parameter moved"
    assert all(torch.isfinite(p).all() for p in after.values())
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    # the covariance losses' own stats reach metrics.jsonl (docs/training.md names them)
    own = {"clip_cov": "cov_clip_frac", "kl_cov": "kl_cov_frac"}.get(loss)
    if own is not None:
        assert 0.0 <= metrics[own] <= 1.0


def test_weights_of_exactly_one_leave_the_step_as_it_was(tiny_policy_dir, tmp_path, registry, config_for):
    """token_truncate to [1, 1]: every weight is 1, so the parameters equal those of a step without it, bit for
    bit, while the metrics show the correction ran (a wiring that dropped the weights would pass this; the
    next test would not)."""
    base = config_for(tiny_policy_dir, TERMS, LOGPROBS)
    _, changed, plain = _one_step(base, tmp_path / "off", registry)
    cfg = config_for(tiny_policy_dir, TERMS, LOGPROBS,
                     "rollout.importance_correction={mode: token_truncate, clip_min: 1.0, clip_max: 1.0}")
    metrics, _, corrected = _one_step(cfg, tmp_path / "on", registry)
    assert changed and all(torch.equal(plain[n], corrected[n]) for n in plain)
    assert metrics["rollout_is/weight_min"] == metrics["rollout_is/weight_max"] == 1.0


def test_masking_every_sequence_leaves_nothing_to_learn(tiny_policy_dir, tmp_path, registry, config_for):
    """sequence_mask with clip_max 0.5: the sampler and the trainer agree (ratio ~1, above 0.5), so every
    sequence is masked; with no KL term (beta 0) the loss is 0 and the step moves nothing, where the same
    step without the correction does (the length reward differs across rollouts)."""
    extra = (TERMS, LOGPROBS, "algorithm.beta=0")
    _, changed, _ = _one_step(config_for(tiny_policy_dir, *extra), tmp_path / "off", registry)
    assert changed
    cfg = config_for(tiny_policy_dir, *extra, "rollout.importance_correction={mode: sequence_mask, clip_max: 0.5}")
    metrics, changed, _ = _one_step(cfg, tmp_path / "on", registry)
    assert metrics["rollout_is/outside_frac"] == 1.0 and metrics["rollout_is/weight_max"] == 0.0
    assert metrics["policy_loss"] == 0.0 and not changed


def test_the_correction_without_the_engines_logprobs_is_refused_before_training(tiny_policy_dir, tmp_path, registry,
                                                                              config_for):
    cfg = config_for(tiny_policy_dir, TERMS, "rollout.importance_correction={mode: sequence_mask}")
    with pytest.raises(ConfigError, match="return_logprobs: true"):
        Trainer(cfg, tmp_path, registry=registry).setup()


class _NoWeights:
    """A third-party policy loss written before ``is_weights`` existed."""

    needs_entropy = entropy_needs_grad = False
    beta = 0.0

    def __init__(self, **options):
        pass

    def __call__(self, *, logp, old_logp, ref_logp, advantages, mask, entropy=None):
        return (-(advantages.unsqueeze(1) * logp) * mask).sum(), {}


class _NoWeightsPlugin:
    @hookimpl
    def register_policy_losses(self, register):
        register("no_weights", _NoWeights, description="test loss without is_weights")


def test_a_policy_loss_that_cannot_take_the_weights_is_named_in_the_check(tiny_policy_dir, config_for):
    registry = registry_with(_NoWeightsPlugin(), autoload=True)
    terms = "rewards.terms=[{name: format}]"
    cfg = config_for(tiny_policy_dir, terms, LOGPROBS, "algorithm.policy_loss={name: no_weights}",
                     "rollout.importance_correction={mode: token_truncate}")
    report = check_config(cfg, registry, data=False)
    assert any("no_weights" in e and "is_weights" in e for e in report.errors), report.errors
    ok = config_for(tiny_policy_dir, terms, LOGPROBS, "rollout.importance_correction={mode: token_truncate}")
    assert check_config(ok, registry, data=False).errors == []
