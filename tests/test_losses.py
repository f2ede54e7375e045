"""Advantage estimators and policy losses, as the trainer calls them through the plugin registry."""

from __future__ import annotations

import math

import pytest
import torch

import syngrpo.builtin
from syngrpo.algo.losses import (
    AdvantageEstimator,
    DrGRPOAdvantage,
    EntropyAdvantageLoss,
    EntropyLoss,
    GRPOAdvantage,
    GRPOLoss,
    MCGRPOAdvantage,
    PolicyLoss,
)
from syngrpo.errors import ConfigError
from syngrpo.plugins import build_registry, make_plugin_manager


@pytest.fixture(scope="module")
def registry():
    return build_registry(make_plugin_manager([syngrpo.builtin], autoload=False))


# ---- advantage estimators ----------------------------------------------------------------


def test_builtin_estimators_are_registered(registry):
    assert {"grpo", "dr_grpo", "mc_grpo"} <= set(registry.names("advantage_estimators"))
    for name in ("grpo", "dr_grpo", "mc_grpo"):
        assert isinstance(registry.create("advantage_estimators", name), AdvantageEstimator)


def test_grpo_estimator_defaults_to_sample_std_and_eps_1e_4():
    est = GRPOAdvantage()
    # r = [1, 0]: mean 0.5, sample std sqrt(0.5) = 0.707107 -> ±0.5 / (0.707107 + 1e-4)
    adv = est(torch.tensor([[1.0, 0.0]]))
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert adv.tolist()[0] == pytest.approx([expected, -expected], rel=1e-6)
    assert est.extra_rollouts == 0
    assert est.keep_mask(torch.zeros(2, 3)).all()


def test_grpo_estimator_population_option():
    adv = GRPOAdvantage(std="population", eps=0.0)(torch.tensor([[1.0, 0.0]]))
    assert adv.tolist()[0] == pytest.approx([1.0, -1.0])


def test_dr_grpo_estimator_keeps_reward_scale():
    adv = DrGRPOAdvantage()(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert adv.tolist()[0] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_mc_grpo_samples_one_more_and_drops_the_median_rollout():
    est = MCGRPOAdvantage(eps=0.0)
    assert est.extra_rollouts == 1
    rewards = torch.tensor([[0.0, 0.2, 0.3, 0.9, 1.0]])  # G + 1 = 5
    adv = est(rewards)
    assert adv.tolist()[0] == pytest.approx([-1.0, -1 / 3, 0.0, 2.0, 7 / 3])  # see test_grpo_maths
    keep = est.keep_mask(rewards)
    assert keep.tolist() == [[True, True, False, True, True]]
    assert int(keep.sum()) == 4  # G rollouts take part in the update


def test_mc_grpo_can_keep_every_rollout():
    est = MCGRPOAdvantage(exclude_pivot=False)
    assert est.extra_rollouts == 0
    assert est.keep_mask(torch.rand(2, 5)).all()


def test_estimator_options_are_validated(registry):
    with pytest.raises(ConfigError, match="std"):
        registry.create("advantage_estimators", "grpo", std="biased")
    with pytest.raises(ConfigError, match="unknown option"):
        registry.create("advantage_estimators", "grpo", epsilon=0.1)
    with pytest.raises(ConfigError, match="eps"):
        registry.create("advantage_estimators", "mc_grpo", eps=-1.0)


# ---- policy losses -----------------------------------------------------------------------


def test_builtin_policy_losses_are_registered(registry):
    assert {"grpo", "entropy_loss", "entropy_advantage"} <= set(registry.names("policy_losses"))
    for name in ("grpo", "entropy_loss", "entropy_advantage"):
        assert isinstance(registry.create("policy_losses", name), PolicyLoss)


def test_grpo_loss_value_and_stats_by_hand():
    # two sequences of two tokens, ratio 1 everywhere (old_logp None), advantages [+1, -1]
    # surrogate per token = -A -> sequence means [-1, +1] -> policy loss 0
    # reference: π = 0.5 vs π_ref = 0.25 on every token -> k3 = 0.193147 -> loss 0 + 0.04 * 0.193147
    logp = torch.full((2, 2), math.log(0.5), requires_grad=True)
    ref = torch.full((2, 2), math.log(0.25))
    loss_fn = GRPOLoss(beta=0.04)
    loss, stats = loss_fn(
        logp=logp, old_logp=None, ref_logp=ref, advantages=torch.tensor([1.0, -1.0]), mask=torch.ones(2, 2)
    )
    assert loss.item() == pytest.approx(0.04 * 0.193147, abs=1e-6)
    assert stats["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert stats["policy_loss"] == pytest.approx(0.0, abs=1e-7)
    assert stats["clip_frac"] == 0.0
    assert stats["loss"] == pytest.approx(loss.item())
    assert "entropy" not in stats
    assert all(isinstance(v, float) for v in stats.values())


def test_grpo_loss_clip_fraction_from_old_logps():
    # ratios [1.5, 0.5, 1.1, 0.5] with A = [+1] on sequence 0 and [-1] on sequence 1 (2 tokens each)
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.1, 0.5]]))
    old = torch.zeros(2, 2)
    _, stats = GRPOLoss(beta=0.0)(
        logp=logp, old_logp=old, ref_logp=None, advantages=torch.tensor([1.0, -1.0]), mask=torch.ones(2, 2)
    )
    # clipped: (1.5, A+) above 1.2 and (0.5, A-) below 0.8 -> 2 of 4 tokens
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_grpo_loss_needs_a_reference_when_beta_is_positive():
    with pytest.raises(ValueError, match="ref_logp"):
        GRPOLoss(beta=0.04)(
            logp=torch.zeros(1, 2), old_logp=None, ref_logp=None, advantages=torch.tensor([1.0]), mask=torch.ones(1, 2)
        )


def test_constant_aggregation_is_dr_grpo_length_unbiased():
    # one sequence with 2 real tokens out of max 4, A = 1, ratio 1: per-token loss -1 -> sum -2 / (1 * 4) = -0.5
    loss, _ = GRPOLoss(beta=0.0, aggregation="constant", max_tokens=4)(
        logp=torch.zeros(1, 3),
        old_logp=None,
        ref_logp=None,
        advantages=torch.tensor([1.0]),
        mask=torch.tensor([[1, 1, 0]]),
    )
    assert loss.item() == pytest.approx(-0.5)


def test_policy_loss_options_are_validated(registry):
    with pytest.raises(ConfigError, match="aggregation"):
        registry.create("policy_losses", "grpo", aggregation="sum")
    with pytest.raises(ConfigError, match="kappa"):
        registry.create("policy_losses", "entropy_advantage", kappa=1.0)
    with pytest.raises(ConfigError, match="unknown option"):
        registry.create("policy_losses", "entropy_loss", alpha=0.4)
    # options of the parent loss pass through
    loss = registry.create("policy_losses", "entropy_advantage", eps_high=0.28, beta=0.0, alpha=0.2)
    assert (loss.eps_high, loss.beta, loss.alpha) == (0.28, 0.0, 0.2)


class TinyPolicy(torch.nn.Module):
    """A linear 'language model': one context vector -> logits over 5 tokens at each of 3 positions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(4, 5)
        self.register_buffer("x", torch.randn(3, 4))

    def logits(self) -> torch.Tensor:
        return self.proj(self.x).unsqueeze(0)  # (1, T=3, V=5)


def _logp_of(model: TinyPolicy, tokens: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(model.logits(), dim=-1)  # (1, T, V)
    return logp.gather(-1, tokens.view(1, -1, 1)).squeeze(-1)  # (1, T)


@pytest.mark.parametrize("advantage,direction", [(1.0, +1), (-1.0, -1)])
@pytest.mark.parametrize("name", ["grpo", "entropy_loss", "entropy_advantage"])
def test_one_step_moves_the_sampled_tokens_with_the_advantage_sign(registry, name, advantage, direction):
    model = TinyPolicy()
    tokens = torch.tensor([1, 3, 0])
    loss_fn = registry.create("policy_losses", name, beta=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = _logp_of(model, tokens).detach()
    logp = _logp_of(model, tokens)
    from syngrpo.algo.grpo import token_entropy

    entropy = token_entropy(model.logits()) if loss_fn.needs_entropy else None
    if entropy is not None and not loss_fn.entropy_needs_grad:
        entropy = entropy.detach()
    loss, _ = loss_fn(
        logp=logp,
        old_logp=None,
        ref_logp=None,
        advantages=torch.tensor([advantage]),
        mask=torch.ones(1, 3),
        entropy=entropy,
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = _logp_of(model, tokens).detach()
    assert (direction * (after - before)).sum().item() > 0


def test_entropy_loss_raises_entropy_when_rewards_carry_no_signal():
    from syngrpo.algo.grpo import token_entropy

    model = TinyPolicy()
    tokens = torch.tensor([1, 3, 0])
    loss_fn = EntropyLoss(coef=1.0, beta=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = token_entropy(model.logits()).mean().item()
    loss, stats = loss_fn(
        logp=_logp_of(model, tokens),
        old_logp=None,
        ref_logp=None,
        advantages=torch.tensor([0.0]),
        mask=torch.ones(1, 3),
        entropy=token_entropy(model.logits()),
    )
    assert stats["entropy_bonus"] == pytest.approx(before, rel=1e-5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert token_entropy(model.logits()).mean().item() > before


def test_entropy_advantage_loss_equals_grpo_on_hand_shaped_advantages():
    # ratio 1, A = +1, token entropies [0.5, 3.0]: shaped [1.2, 1.5] (α 0.4, κ 2) -> loss -(1.2 + 1.5) / 2 = -1.35
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, stats = EntropyAdvantageLoss(beta=0.0)(
        logp=logp,
        old_logp=None,
        ref_logp=None,
        advantages=torch.tensor([1.0]),
        mask=torch.ones(1, 2),
        entropy=torch.tensor([[0.5, 3.0]]),
    )
    assert loss.item() == pytest.approx(-1.35)
    assert stats["entropy_advantage"] == pytest.approx((0.2 + 0.5) / 2)
    assert stats["entropy"] == pytest.approx(1.75)


def test_entropy_losses_need_entropy():
    for loss_fn in (EntropyLoss(beta=0.0), EntropyAdvantageLoss(beta=0.0)):
        assert loss_fn.needs_entropy
        with pytest.raises(ValueError, match="entropy"):
            loss_fn(
                logp=torch.zeros(1, 2),
                old_logp=None,
                ref_logp=None,
                advantages=torch.tensor([1.0]),
                mask=torch.ones(1, 2),
            )
