"""The edges of syngrpo.algo that mutation testing found unpinned (docs/contributing.md, "Mutation testing").

Each test here was written for mutants mutmut left alive over ``syngrpo/algo`` (a changed default, a dropped
check, a bound moved by one, an error whose text is lost) and was seen failing on that mutant.  The values are
worked out by hand in the comments; the error checks match the words that tell a user what to change.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from syngrpo.algo import grpo
from syngrpo.algo.diversity import (
    MAX_DESCRIPTION_CHARS,
    DiversitySmoother,
    diversity_reward,
    ground_truth_diversity,
    select_description,
    usable_description,
)
from syngrpo.algo.losses import (
    DrGRPOAdvantage,
    EntropyAdvantageLoss,
    EntropyLoss,
    GRPOAdvantage,
    GRPOLoss,
    MCGRPOAdvantage,
)
from syngrpo.errors import ConfigError

# ---- eq. 4: V(q) --------------------------------------------------------------------------


def test_one_reward_has_no_diversity_even_when_it_is_high():
    assert ground_truth_diversity([1.0]) == 0.0
    assert ground_truth_diversity([]) == 0.0
    # two rewards are enough: [0, 1] has population variance 1/4 -> V = 1
    assert ground_truth_diversity([0.0, 1.0]) == 1.0


def test_non_finite_reward_error_names_the_accuracy_rewards():
    with pytest.raises(ValueError, match=r"accuracy rewards must be finite numbers, got nan"):
        ground_truth_diversity([0.0, float("nan")])


# ---- diversity smoothing ------------------------------------------------------------------


def test_update_logs_the_numbers_of_the_step():
    s = DiversitySmoother(gamma=0.5)
    s.update([0.2, 0.6])  # G_1 = 0.4
    out = s.update([0.1, 0.3])  # V̄ = 0.2, G_2 = 0.5 * 0.4 + 0.5 * 0.2 = 0.3, ratio 1.5 -> [0.15, 0.45]
    assert out == pytest.approx([0.15, 0.45])
    assert s.last == pytest.approx(
        {"batch_avg": 0.2, "global_avg": 0.3, "ratio": 1.5, "smoothed_avg": 0.3, "batch_size": 2.0}
    )
    assert s.step == 2


def test_raw_diversities_are_clipped_before_averaging():
    s = DiversitySmoother(gamma=0.7, enabled=False)
    # 1.5 -> 1, -0.5 -> 0: V̄ = 0.5 (unclipped it would also be 0.5, so check the returned values too)
    assert s.update([1.5, -0.5, 0.5]) == [1.0, 0.0, 0.5]
    assert s.last["batch_avg"] == pytest.approx(0.5)


def test_disabled_smoothing_logs_a_ratio_of_one():
    s = DiversitySmoother(gamma=0.5, enabled=False)
    s.update([0.2, 0.6])
    s.update([0.1, 0.3])  # G_2 = 0.3, V̄ = 0.2: the smoothing would scale by 1.5, the ablation by 1
    assert s.last["ratio"] == 1.0
    assert s.last["global_avg"] == pytest.approx(0.3)


def test_zero_batch_logs_a_ratio_of_one():
    s = DiversitySmoother(gamma=0.7)
    s.update([0.4])
    assert s.update([0.0, 0.0]) == [0.0, 0.0]
    assert s.last["ratio"] == 1.0
    assert s.last["global_avg"] == pytest.approx(0.28)  # 0.7 * 0.4


def test_non_finite_batch_error_names_the_batch_diversities():
    with pytest.raises(ValueError, match=r"batch diversities must be finite numbers"):
        DiversitySmoother().update([0.1, float("inf")])


def test_gamma_bounds_are_inclusive_and_the_error_says_the_range():
    for gamma in (0.0, 1.0):
        assert DiversitySmoother(gamma=gamma).gamma == gamma
    for gamma in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
            DiversitySmoother(gamma=gamma)


def test_state_dict_keeps_the_enabled_flag_through_a_round_trip():
    a = DiversitySmoother(gamma=0.6, enabled=False)
    a.update([0.2, 0.6])
    state = json.loads(json.dumps(a.state_dict()))
    assert set(state) == {"gamma", "enabled", "step", "global_avg", "last"}
    assert state["enabled"] is False
    b = DiversitySmoother(gamma=0.7, enabled=True)
    b.load_state_dict(state)
    assert b.enabled is False
    assert b.gamma == 0.6
    # the ablation goes on returning the raw values after a resume
    assert b.update([0.1, 0.3]) == a.update([0.1, 0.3]) == pytest.approx([0.1, 0.3])


def test_a_state_without_enabled_loads_as_smoothing_on():
    # a checkpoint written before the flag existed: smoothing was always on
    b = DiversitySmoother(enabled=False)
    b.load_state_dict({"gamma": 0.7, "step": 1, "global_avg": 0.4})
    assert b.enabled is True
    assert b.step == 1 and isinstance(b.step, int)
    assert b.global_avg == 0.4
    assert b.last == {}


def test_a_fresh_state_loads_with_no_average():
    b = DiversitySmoother()
    b.update([0.5])
    b.load_state_dict(DiversitySmoother(gamma=0.3).state_dict())
    assert (b.gamma, b.step, b.global_avg, b.last) == (0.3, 0, None, {})
    assert b.update([0.2, 0.4]) == pytest.approx([0.2, 0.4])  # G_1 = V̄_1: ratio 1


def test_loaded_state_converts_its_numbers():
    b = DiversitySmoother()
    b.load_state_dict({"gamma": "0.5", "step": "3", "global_avg": "0.25", "enabled": 1, "last": {"ratio": "2"}})
    assert (b.gamma, b.step, b.global_avg, b.enabled, b.last) == (0.5, 3, 0.25, True, {"ratio": 2.0})
    assert isinstance(b.step, int) and isinstance(b.global_avg, float)


def test_loaded_gamma_bounds_are_inclusive_and_the_error_says_so():
    for gamma in (0.0, 1.0):
        b = DiversitySmoother()
        b.load_state_dict({"gamma": gamma, "step": 0, "global_avg": None})
        assert b.gamma == gamma
    for gamma in (-0.01, 1.01):
        with pytest.raises(ValueError, match=r"diversity smoother state has gamma .* outside \[0, 1\]"):
            DiversitySmoother().load_state_dict({"gamma": gamma, "step": 0, "global_avg": None})


def test_incomplete_state_error_names_every_missing_key():
    with pytest.raises(ValueError, match=r"lacks \['global_avg', 'step'\]"):
        DiversitySmoother().load_state_dict({"gamma": 0.7})


# ---- eq. 6: R_diversity ---------------------------------------------------------------------


@pytest.mark.parametrize("predicted", [None, "no score", object(), float("nan"), float("inf")])
@pytest.mark.parametrize("target", [0.0, 0.5, 1.0])
def test_no_usable_score_earns_zero_whatever_the_target(predicted, target):
    assert diversity_reward(predicted, target) == 0.0


def test_non_finite_target_error_says_what_it_got():
    with pytest.raises(ValueError, match=r"target diversity must be finite, got inf"):
        diversity_reward(0.5, float("inf"))


# ---- eq. 8: which description goes to the data server --------------------------------------


def test_usable_description_length_bound_is_inclusive_after_stripping():
    assert usable_description("x" * MAX_DESCRIPTION_CHARS)
    assert not usable_description("x" * (MAX_DESCRIPTION_CHARS + 1))
    assert usable_description("  ab  ", max_chars=2)
    assert not usable_description("abc", max_chars=2)
    assert not usable_description("   ")
    assert not usable_description(None)
    assert not usable_description(b"bytes")  # type: ignore[arg-type]


def test_select_description_passes_max_chars_on():
    # the best reward's description is too long for max_chars=3: the next one is chosen
    assert select_description(["abcd", "abc"], [0.9, 0.5], max_chars=3) == 1
    assert select_description(["abcd", "abc"], [0.9, 0.5]) == 0


def test_select_description_skips_rewards_that_are_not_numbers():
    assert select_description(["a", "b", "c"], [None, "high", 0.1]) == 2  # type: ignore[list-item]
    assert select_description(["a", "b"], [float("nan"), float("-inf")]) is None


def test_select_description_rng_draws_only_among_the_best():
    rng = random.Random(0)
    picks = {select_description(["a", "b", "c", "d"], [0.2, 0.9, 0.9, 0.1], rng) for _ in range(40)}
    assert picks == {1, 2}
    # one best: the rng is not consulted (the draw would be 0 or 1 of a wrong list otherwise)
    assert all(select_description(["a", "b", "c"], [0.2, 0.1, 0.9], random.Random(s)) == 2 for s in range(20))


def test_select_description_leaves_the_rng_alone_without_a_tie():
    # a draw only where there is a tie: the run's other draws from the same rng stay where a seed put them
    rng = random.Random(0)
    state = rng.getstate()
    assert select_description(["a", "b"], [0.2, 0.9], rng) == 1
    assert rng.getstate() == state


def test_select_description_length_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"2 descriptions but 3 diversity rewards"):
        select_description(["a", "b"], [0.1, 0.2, 0.3])


# ---- eq. 1 and MC-GRPO: group advantages ---------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("scale", "var", r"scale must be 'std', 'mad' or 'none', got 'var'"),
        ("baseline", "mode", r"baseline must be 'mean' or 'median', got 'mode'"),
        ("std", "biased", r"std must be 'sample' or 'population', got 'biased'"),
    ],
)
def test_group_advantages_option_errors_name_the_choices(option, value, words):
    with pytest.raises(ValueError, match=words):
        grpo.group_advantages(torch.zeros(1, 2), **{option: value})


def test_group_advantages_shape_error_names_the_shape():
    with pytest.raises(ValueError, match=r"rewards must be \(B, G\), got shape \(4,\)"):
        grpo.group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match=r"rewards must be \(B, G\), got shape \(4,\)"):
        grpo.median_pivot_mask(torch.zeros(4))


def test_agreement_is_judged_per_group_not_over_the_batch():
    # float32 0.9 * 3 has a mean 6e-8 off 0.9: without the per-row test that group's advantages would be
    # ±6e-8 / 1e-4, not 0; the other group spans [0, 1], so batch-wide max/min never call the first one agreed
    adv = grpo.group_advantages(torch.tensor([[0.9, 0.9, 0.9], [0.0, 0.5, 1.0]]))
    assert adv[0].tolist() == [0.0, 0.0, 0.0]
    # [0, 0.5, 1]: deviations ±0.5, sample std sqrt(0.5 / 2) = 0.5
    assert adv[1].tolist() == pytest.approx([-0.5 / (0.5 + 1e-4), 0.0, 0.5 / (0.5 + 1e-4)], rel=1e-6)


def test_group_advantages_default_eps_is_1e_4_and_integers_become_floats():
    # r = [0, 2]: mean 1, sample std sqrt(2) -> ±1 / (sqrt(2) + 1e-4)
    adv = grpo.group_advantages(torch.tensor([[0, 2]]))
    assert adv.dtype == torch.float32
    expected = 1 / (math.sqrt(2) + 1e-4)
    assert adv.tolist()[0] == pytest.approx([-expected, expected], rel=1e-6)


def test_median_baseline_with_std_scale():
    # r = [0, 1, 5]: median 1, mean 2, sample std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    adv = grpo.group_advantages(torch.tensor([[0.0, 1.0, 5.0]], dtype=torch.float64), baseline="median", eps=0.0)
    assert adv.tolist()[0] == pytest.approx([-1 / math.sqrt(7), 0.0, 4 / math.sqrt(7)])


def test_entropy_advantage_defaults_are_alpha_0_4_and_kappa_2():
    # A = 1: psi = min(0.4 * H, 1 / 2): H = 0.5 -> 0.2, H = 5 -> 0.5
    out = grpo.entropy_advantage(torch.tensor([1.0]), torch.tensor([[0.5, 5.0]]))
    assert out.tolist()[0] == pytest.approx([1.2, 1.5])


# ---- estimators -----------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [GRPOAdvantage(), DrGRPOAdvantage(), MCGRPOAdvantage(exclude_pivot=False)])
def test_keep_mask_is_a_bool_mask_of_the_rewards_shape(estimator):
    keep = estimator.keep_mask(torch.rand(2, 5))
    assert keep.dtype == torch.bool
    assert keep.shape == (2, 5)
    assert keep.all()


def test_mc_grpo_default_eps_is_the_authors_1e_3():
    est = MCGRPOAdvantage()
    assert est.eps == 1e-3
    # r = [0, 1, 3]: median 1, MAD = median(|[-1, 0, 2]|) = 1 -> (r - 1) / (1 + 1e-3)
    adv = est(torch.tensor([[0.0, 1.0, 3.0]], dtype=torch.float64))
    assert adv.tolist()[0] == pytest.approx([-1 / 1.001, 0.0, 2 / 1.001], rel=1e-9)


def test_mc_grpo_scale_none_keeps_the_median_centred_rewards():
    est = MCGRPOAdvantage(scale="none")
    assert est.scale == "none"
    assert est(torch.tensor([[0.0, 1.0, 3.0]])).tolist()[0] == pytest.approx([-1.0, 0.0, 2.0])


def test_mc_grpo_scale_error_names_the_choices():
    with pytest.raises(ConfigError, match=r"scale must be 'mad' or 'none', got 'std'"):
        MCGRPOAdvantage(scale="std")


@pytest.mark.parametrize("eps", [-1e-3, float("nan"), float("inf")])
def test_estimator_eps_error_says_what_is_allowed(eps):
    with pytest.raises(ConfigError, match=r"eps must be a finite number >= 0"):
        GRPOAdvantage(eps=eps)


def test_grpo_estimator_std_error_names_the_choices():
    with pytest.raises(ConfigError, match=r"std must be 'sample' or 'population', got 'biased'"):
        GRPOAdvantage(std="biased")


# ---- policy losses ----------------------------------------------------------------------------


def _call(loss_fn, *, logp=None, advantages=None, mask=None, entropy=None, ref_logp=None, is_weights=None):
    logp = torch.zeros(2, 3) if logp is None else logp
    return loss_fn(
        logp=logp,
        old_logp=None,
        ref_logp=ref_logp,
        advantages=torch.tensor([1.0, -1.0]) if advantages is None else advantages,
        mask=torch.ones_like(logp) if mask is None else mask,
        entropy=entropy,
        is_weights=is_weights,
    )


def test_entropy_advantage_alpha_must_be_finite_and_not_negative():
    for alpha in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"alpha must be a finite number >= 0"):
            EntropyAdvantageLoss(alpha=alpha)
    # alpha = 0 is allowed: no shaping, plain GRPO's advantages
    loss = EntropyAdvantageLoss(alpha=0.0, beta=0.0)
    assert loss.alpha == 0.0
    _, stats = _call(loss, entropy=torch.ones(2, 3))
    assert stats["entropy_advantage"] == 0.0


def test_entropy_advantage_kappa_error_says_why():
    for kappa in (1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"kappa must be > 1 so the entropy term cannot flip"):
            EntropyAdvantageLoss(kappa=kappa)


def test_entropy_advantage_loss_uses_its_kappa():
    # A = [1, -1], large entropy: psi = |A| / kappa = 0.25 with kappa 4 (0.5 with the default 2)
    loss = EntropyAdvantageLoss(alpha=10.0, kappa=4.0, beta=0.0)
    _, stats = _call(loss, entropy=torch.full((2, 3), 5.0))
    assert stats["entropy_advantage"] == pytest.approx(0.25)
    # ratio 1: per-token loss -(A + psi) -> sequence means [-1.25, 0.75] -> -0.25
    assert stats["policy_loss"] == pytest.approx(-0.25)


def test_entropy_advantage_loss_wants_one_advantage_per_sequence():
    with pytest.raises(ValueError, match=r"advantages must be \(N,\) with N=2, got \(2, 3\)"):
        _call(EntropyAdvantageLoss(beta=0.0), advantages=torch.ones(2, 3), entropy=torch.ones(2, 3))


def test_entropy_loss_coef_default_and_validation():
    assert EntropyLoss().coef == 1e-3
    with pytest.raises(ConfigError, match=r"coef must be a finite number"):
        EntropyLoss(coef=float("nan"))
    # entropy 2 on every token, coef 0.5: bonus 1, subtracted from GRPO's loss (0 here: advantages ±1, ratio 1)
    loss, stats = _call(EntropyLoss(coef=0.5, beta=0.0), entropy=torch.full((2, 3), 2.0))
    assert stats["entropy_bonus"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-1.0)
    assert stats["loss"] == pytest.approx(-1.0)
    assert stats["entropy"] == pytest.approx(2.0)


def test_entropy_losses_name_what_they_need():
    with pytest.raises(ValueError, match=r"the entropy_loss policy loss needs per-token entropy \(N, T\) with its graph"):
        _call(EntropyLoss(beta=0.0))
    with pytest.raises(ValueError, match=r"the entropy_advantage policy loss needs per-token entropy \(N, T\)$"):
        _call(EntropyAdvantageLoss(beta=0.0))


def test_grpo_loss_option_errors_say_what_is_allowed():
    for name in ("eps_low", "eps_high", "beta"):
        with pytest.raises(ConfigError, match=rf"{name} must be a finite number >= 0"):
            GRPOLoss(**{name: -0.1})
        with pytest.raises(ConfigError, match=rf"{name} must be a finite number >= 0"):
            GRPOLoss(**{name: float("nan")})
    with pytest.raises(ConfigError, match=r"eps_low must be below 1"):
        GRPOLoss(eps_low=1.0)
    assert GRPOLoss(eps_low=0.0, eps_high=0.0, beta=0.0).eps_low == 0.0
    with pytest.raises(ConfigError, match=r"max_tokens must be a positive integer, got 0"):
        GRPOLoss(max_tokens=0)
    assert GRPOLoss(max_tokens=1).max_tokens == 1


def test_grpo_loss_shape_errors_name_the_shapes():
    loss_fn = GRPOLoss(beta=0.0)
    with pytest.raises(ValueError, match=r"logp and mask must both be \(N, T\); got \(2, 3\) and \(2, 2\)"):
        _call(loss_fn, mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"logp and mask must both be \(N, T\); got \(6,\) and \(6,\)"):
        _call(loss_fn, logp=torch.zeros(6))
    with pytest.raises(ValueError, match=r"advantages must be \(N,\) or \(N, T\) with N=2, got \(3,\)"):
        _call(loss_fn, advantages=torch.ones(3))
    with pytest.raises(ValueError, match=r"advantages must be \(N,\) or \(N, T\) with N=2, got \(2, 3, 1\)"):
        _call(loss_fn, advantages=torch.ones(2, 3, 1))
    # per-token advantages (N, T) are accepted
    _call(loss_fn, advantages=torch.ones(2, 3))


def test_grpo_loss_reports_kl_without_adding_it_when_beta_is_zero():
    # π = 0.5, π_ref = 0.25 on every token: k3 = 0.193147 (tests/test_losses.py); the second sequence is masked out
    logp = torch.full((2, 2), math.log(0.5))
    ref = torch.full((2, 2), math.log(0.25))
    ref[1] = 0.0  # a different KL on the masked sequence must not enter the mean
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    loss, stats = _call(GRPOLoss(beta=0.0), logp=logp, ref_logp=ref, mask=mask, advantages=torch.tensor([0.0, 0.0]))
    assert stats["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert loss.item() == pytest.approx(0.0)


def test_kl_statistic_of_one_unmasked_token_is_that_token_s_kl():
    logp = torch.full((1, 2), math.log(0.5))
    ref = torch.full((1, 2), math.log(0.25))
    _, stats = _call(GRPOLoss(beta=0.0), logp=logp, ref_logp=ref, mask=torch.tensor([[1.0, 0.0]]),
                     advantages=torch.tensor([0.0]))
    assert stats["kl"] == pytest.approx(0.193147, abs=1e-6)


def test_kl_statistic_of_an_all_masked_batch_is_zero_not_nan():
    _, stats = _call(GRPOLoss(beta=0.04), ref_logp=torch.zeros(2, 3), mask=torch.zeros(2, 3))
    assert stats["kl"] == 0.0


def test_grpo_loss_advantage_mean_and_entropy_statistics():
    entropy = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    _, stats = _call(GRPOLoss(beta=0.0), advantages=torch.tensor([3.0, 1.0]), mask=mask, entropy=entropy)
    assert stats["advantage_mean"] == pytest.approx(2.0)
    assert stats["entropy"] == pytest.approx(2.5)  # the masked 9s are left out
    _, stats = _call(GRPOLoss(beta=0.0), advantages=torch.tensor([1, 0]))  # integer advantages
    assert stats["advantage_mean"] == pytest.approx(0.5)


def test_importance_weights_multiply_the_policy_term_only():
    # ratio 1, A = [1, -1]: per-token loss [-1, +1]; weights [2, 1] -> sequence means [-2, 1] -> -0.5
    logp = torch.full((2, 3), math.log(0.5))
    ref = torch.full((2, 3), math.log(0.25))
    w = torch.tensor([[2.0], [1.0]])
    loss, stats = _call(GRPOLoss(beta=0.04), logp=logp, ref_logp=ref, is_weights=w)
    assert stats["policy_loss"] == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-0.5 + 0.04 * 0.193147, abs=1e-6)
