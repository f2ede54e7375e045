"""One optimisation step of every trainer path changes the policy's parameters, and says what it did."""

from __future__ import annotations

import math

import pytest
import torch

from syngrpo.train.trainer import Trainer, lr_factor

TERMS = "rewards.terms=[{name: length}, {name: format}]"


def _one_step(cfg, run_dir, registry, transport=None):
    trainer = Trainer(cfg, run_dir, registry=registry, transport=transport)
    try:
        trainer.setup()
        before = {n: p.detach().clone() for n, p in trainer.bundle.model.named_parameters() if p.requires_grad}
        metrics = trainer.train_step(1)
        changed = [n for n, p in trainer.bundle.model.named_parameters()
                   if p.requires_grad and not torch.equal(p.detach(), before[n])]
        finite = all(torch.isfinite(p).all() for p in trainer.bundle.model.parameters())
        return metrics, changed, finite, trainer
    finally:
        trainer.close()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="grpo"),
        pytest.param(["algorithm.advantage={name: dr_grpo}", "algorithm.aggregation=constant"], id="dr_grpo"),
        pytest.param(["algorithm.advantage={name: mc_grpo}"], id="mc_grpo"),
        pytest.param(["algorithm.policy_loss={name: entropy_loss}"], id="entropy_loss"),
        pytest.param(["algorithm.policy_loss={name: entropy_advantage}"], id="entropy_advantage"),
        pytest.param(["algorithm.eps_high=0.28", "algorithm.aggregation=token_mean", "optim.grad_accum=2"],
                     id="clip_higher_token_mean_grad_accum"),
        pytest.param(["algorithm.updates_per_batch=2", "algorithm.beta=0"], id="two_updates_no_reference"),
        pytest.param(["algorithm.shared_prefix=false"], id="naive_scoring"),
    ],
)
def test_one_step_changes_parameters_for_every_algorithm_variant(extra, tiny_policy_dir, tmp_path, registry,
                                                                  config_for):
    cfg = config_for(tiny_policy_dir, TERMS, *extra)
    metrics, changed, finite, _ = _one_step(cfg, tmp_path, registry)
    assert changed, "no parameter moved"
    assert finite
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    assert metrics["reward/length"] > 0


@pytest.mark.parametrize("mode", ["off", "sync", "async"])
def test_one_step_changes_parameters_in_every_synthesis_mode(mode, tiny_policy_dir, tmp_path, registry, config_for):
    extra = [TERMS] + (["synthesis.transport=inprocess"] if mode != "off" else [])
    cfg = config_for(tiny_policy_dir, *extra, mode=mode)
    metrics, changed, finite, _ = _one_step(cfg, tmp_path, registry)
    assert changed and finite
    if mode == "off":
        assert "synthesis/submitted" not in metrics and "reward/diversity" not in metrics
    else:  # the syn response format: a diversity reward and a working link to the data server
        assert "reward/diversity" in metrics and metrics["synthesis/server_healthy"] == 1.0


def test_mc_grpo_samples_one_extra_rollout_per_prompt(tiny_policy_dir, tmp_path, registry, config_for):
    cfg = config_for(tiny_policy_dir, TERMS, "algorithm.advantage={name: mc_grpo}", "logging.samples_per_step=1")
    _, _, _, trainer = _one_step(cfg, tmp_path, registry)
    assert len(trainer._step_samples[0]["completions"]) == cfg.rollout.num_generations + 1


def test_logprobs_of_the_loss_match_the_samplers(tiny_policy_dir, tmp_path, registry, config_for):
    """The multimodal position bug (REFERENCE.md) would show here as a gap of ~1e-3."""
    cfg = config_for(tiny_policy_dir, TERMS, "rollout.engine_options={return_logprobs: true}")
    metrics, _, _, _ = _one_step(cfg, tmp_path, registry)
    assert metrics["logprob/engine_max_abs_diff"] < 1e-5


@pytest.mark.parametrize("policy", ["tiny_policy_dir", "sft_policy_dir"], ids=["random", "warmed_up"])
def test_zero_rewards_everywhere_give_zero_advantages_and_no_update(policy, tmp_path, registry, config_for, request):
    """All-equal groups, the collapse Syn-GRPO attacks: no advantage, so no update.

    The rewards are all zero by construction (the ``constant`` test reward), not because the random
    policy happens to write nothing parsable: the warmed-up policy, whose answers the REC rewards
    would score, must give the same result.
    """
    cfg = config_for(request.getfixturevalue(policy), "algorithm.beta=0", "rewards.terms=[{name: constant}]")
    metrics, changed, _, _ = _one_step(cfg, tmp_path, registry)
    assert metrics["reward/total"] == 0.0
    assert metrics["reward/zero_variance_groups_total"] == 1.0
    assert not changed


def test_frozen_vision_tower_does_not_move(tiny_policy_dir, tmp_path, registry, config_for):
    def vision(names):
        return [n for n in names if ".visual." in n or n.startswith("visual.")]

    _, changed, _, _ = _one_step(config_for(tiny_policy_dir, TERMS), tmp_path / "a", registry)
    assert vision(changed)  # trained by default
    _, changed, _, _ = _one_step(config_for(tiny_policy_dir, TERMS, "model.freeze_vision=true"), tmp_path / "b",
                                 registry)
    assert changed and not vision(changed)


def test_learning_rate_schedules():
    assert lr_factor(0, total=10, warmup=2, schedule="constant") == 0.5
    assert lr_factor(5, total=10, warmup=0, schedule="constant") == 1.0
    assert lr_factor(5, total=10, warmup=0, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(10, total=10, warmup=0, schedule="cosine") == pytest.approx(0.0)
    assert lr_factor(0, total=10, warmup=0, schedule="cosine") == pytest.approx(1.0)
