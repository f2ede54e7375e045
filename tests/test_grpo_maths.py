"""The pure GRPO functions of syngrpo.algo.grpo against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from syngrpo.algo import grpo


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---- eq. 1: group-normalised advantages --------------------------------------------------


def test_eq1_with_sample_std():
    # r = [3, 1, 1, 3]: mean 2, deviations [1, -1, -1, 1], squared sum 4
    # sample std = sqrt(4 / 3) = 1.154701 -> advantages ±1 / 1.154701 = ±0.866025
    adv = grpo.group_advantages(t([[3.0, 1.0, 1.0, 3.0]]), eps=0.0, std="sample")
    assert adv.tolist()[0] == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=1e-6)


def test_eq1_with_population_std():
    # same rewards, population std = sqrt(4 / 4) = 1 -> advantages are the deviations
    adv = grpo.group_advantages(t([[3.0, 1.0, 1.0, 3.0]]), eps=0.0, std="population")
    assert adv.tolist()[0] == pytest.approx([1.0, -1.0, -1.0, 1.0])


def test_eps_is_added_to_the_std():
    # population std 1 + eps 1 = 2 -> deviations / 2
    adv = grpo.group_advantages(t([[3.0, 1.0, 1.0, 3.0]]), eps=1.0, std="population")
    assert adv.tolist()[0] == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_rows_are_normalised_independently():
    adv = grpo.group_advantages(t([[1.0, 0.0], [10.0, 30.0]]), eps=0.0, std="population")
    # row 1: mean 0.5, std 0.5 -> [1, -1]; row 2: mean 20, std 10 -> [-1, 1]
    assert adv.tolist() == [pytest.approx([1.0, -1.0]), pytest.approx([-1.0, 1.0])]


def test_a_group_that_all_agrees_has_zero_advantage():
    for scale in ("std", "mad", "none"):
        adv = grpo.group_advantages(t([[0.7] * 6]), scale=scale)
        assert adv.abs().max().item() == 0.0


def test_a_single_rollout_group_is_zero_not_nan():
    adv = grpo.group_advantages(t([[0.4]]), std="sample")
    assert adv.tolist() == [[0.0]]


def test_dr_grpo_scale_none_only_centres():
    adv = grpo.group_advantages(t([[1.0, 0.0, 0.0, 0.0]]), scale="none")
    # mean 0.25 -> [0.75, -0.25, -0.25, -0.25]
    assert adv.tolist()[0] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_median_baseline_with_mad_scale():
    # r = [0, 0.2, 0.3, 0.9, 1.0]: median 0.3; |r - 0.3| = [0.3, 0.1, 0, 0.6, 0.7], whose median is 0.3
    # advantages (r - 0.3) / 0.3 = [-1, -1/3, 0, 2, 7/3]
    adv = grpo.group_advantages(t([[0.0, 0.2, 0.3, 0.9, 1.0]]), baseline="median", scale="mad", eps=0.0)
    assert adv.tolist()[0] == pytest.approx([-1.0, -1 / 3, 0.0, 2.0, 7 / 3])


def test_median_baseline_resists_the_sign_flip_an_outlier_causes():
    # rewards [0.6, 0.6, 0.5, 0.5, 10]: the mean 2.44 makes every ordinary rollout negative;
    # the median 0.6 keeps the two good ordinary rollouts at zero and the worse ones negative.
    r = t([[0.6, 0.6, 0.5, 0.5, 10.0]])
    mean_adv = grpo.group_advantages(r, scale="none")
    median_adv = grpo.group_advantages(r, scale="none", baseline="median")
    assert (mean_adv[0, :4] < 0).all()
    assert median_adv[0, :2].tolist() == [0.0, 0.0]
    assert median_adv[0, 2].item() < 0 < median_adv[0, 4].item()


def test_median_pivot_mask_marks_exactly_the_median_rollout():
    r = t([[0.9, 0.1, 0.5], [0.0, 1.0, 0.4]])
    mask = grpo.median_pivot_mask(r)
    assert mask.tolist() == [[False, False, True], [False, False, True]]
    adv = grpo.group_advantages(r, scale="mad", baseline="median")
    assert adv[mask].abs().max().item() == 0.0


def test_group_advantages_rejects_a_flat_vector():
    with pytest.raises(ValueError, match=r"\(B, G\)"):
        grpo.group_advantages(t([1.0, 0.0]))


@given(st.lists(st.floats(0, 3), min_size=2, max_size=8))
def test_mean_centred_advantages_sum_to_zero(rewards):
    for scale in ("std", "none"):
        adv = grpo.group_advantages(t([rewards]), scale=scale)
        assert abs(adv.sum().item()) < 1e-6 * max(1.0, float(adv.abs().max()))


# ---- entropy, KL --------------------------------------------------------------------------


def test_uniform_distribution_entropy_is_log_v():
    h = grpo.token_entropy(torch.zeros(2, 3, 4))
    assert torch.allclose(h, torch.full((2, 3), math.log(4)))


def test_two_way_entropy_by_hand():
    # logits [0, ln 3] -> p = [1/4, 3/4]; H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335
    h = grpo.token_entropy(torch.tensor([[[0.0, math.log(3.0)]]]))
    assert h.item() == pytest.approx(0.562335, abs=1e-6)


def test_suppressed_tokens_do_not_make_entropy_nan():
    logits = torch.tensor([[[0.0, float("-inf"), float("-inf")]]])
    h = grpo.token_entropy(logits)
    assert h.item() == 0.0


def test_kl_k3_by_hand():
    # π = 0.5, π_ref = 0.25: d = ln(0.25 / 0.5) = -ln 2; k3 = e^d - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    kl = grpo.kl_k3(torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]]))
    assert kl.item() == pytest.approx(0.193147, abs=1e-6)
    assert grpo.kl_k3(torch.zeros(2, 2), torch.zeros(2, 2)).abs().max().item() == 0.0


@given(st.floats(-5, 5), st.floats(-5, 5))
def test_kl_k3_is_never_negative(a, b):
    assert grpo.kl_k3(t([[a]]), t([[b]])).item() >= -1e-12


# ---- aggregation -------------------------------------------------------------------------

VALUES = t([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_sequence_mean_averages_each_sequence_then_skips_empty_ones():
    # row 1: (1 + 2 + 3) / 3 = 2; row 2: 4 / 1 = 4; row 3 has no tokens -> (2 + 4) / 2 = 3
    assert grpo.aggregate(VALUES, MASK, "sequence_mean").item() == pytest.approx(3.0)


def test_token_mean_averages_all_tokens():
    # (1 + 2 + 3 + 4) / 4 = 2.5
    assert grpo.aggregate(VALUES, MASK, "token_mean").item() == pytest.approx(2.5)


def test_constant_divides_by_sequences_times_max_tokens():
    # Dr. GRPO: 10 / (3 sequences * 5) = 0.6667; default max_tokens = T = 3 -> 10 / 9
    assert grpo.aggregate(VALUES, MASK, "constant", max_tokens=5).item() == pytest.approx(10 / 15)
    assert grpo.aggregate(VALUES, MASK, "constant").item() == pytest.approx(10 / 9)


def test_nothing_unmasked_aggregates_to_zero_with_a_graph():
    v = torch.ones(2, 2, requires_grad=True)
    out = grpo.aggregate(v, torch.zeros(2, 2), "sequence_mean")
    assert out.item() == 0.0 and out.requires_grad


def test_unknown_aggregation_is_an_error():
    with pytest.raises(ValueError, match="aggregation"):
        grpo.aggregate(VALUES, MASK, "median")  # type: ignore[arg-type]


# ---- clipped surrogate -------------------------------------------------------------------


def _surrogate_case():
    ratios = [1.5, 0.5, 1.1, 0.5]
    logp = t([[math.log(r) for r in ratios]])
    old = torch.zeros_like(logp)
    adv = t([[1.0, -1.0, 1.0, 1.0]])
    return logp, old, adv


def test_clipped_surrogate_by_hand():
    logp, old, adv = _surrogate_case()
    loss, clip_frac = grpo.clipped_surrogate(logp, old, adv, torch.ones_like(logp))
    # token 1: ρ 1.5, A +1 -> min(1.5, 1.2) = 1.2 -> loss -1.2 (clipped high)
    # token 2: ρ 0.5, A -1 -> min(-0.5, -0.8) = -0.8 -> loss 0.8 (clipped low)
    # token 3: ρ 1.1, A +1 -> 1.1 inside the band -> loss -1.1
    # token 4: ρ 0.5, A +1 -> min(0.5, 0.8) = 0.5 -> loss -0.5 (not clipped: the gradient still flows)
    assert loss.tolist()[0] == pytest.approx([-1.2, 0.8, -1.1, -0.5])
    assert clip_frac.item() == pytest.approx(2 / 4)


def test_clip_higher_widens_only_the_upper_bound():
    logp, old, adv = _surrogate_case()
    loss, clip_frac = grpo.clipped_surrogate(logp, old, adv, torch.ones_like(logp), eps_low=0.2, eps_high=0.28)
    assert loss.tolist()[0] == pytest.approx([-1.28, 0.8, -1.1, -0.5])
    assert clip_frac.item() == pytest.approx(2 / 4)


def test_clip_fraction_counts_only_unmasked_tokens():
    logp, old, adv = _surrogate_case()
    mask = torch.tensor([[1, 0, 1, 1]])  # hide the low-clipped token
    _, clip_frac = grpo.clipped_surrogate(logp, old, adv, mask)
    assert clip_frac.item() == pytest.approx(1 / 3)


def test_sequence_advantages_broadcast_over_tokens():
    logp = torch.zeros(2, 3)
    loss, _ = grpo.clipped_surrogate(logp, logp, t([2.0, -1.0]), torch.ones(2, 3))
    # ratio 1 -> loss = -A on every token of the sequence
    assert loss.tolist() == [[-2.0] * 3, [1.0] * 3]


def test_clipped_tokens_get_no_gradient():
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = grpo.clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0  # clipped
    assert logp.grad[0, 1].item() == pytest.approx(-1.1)  # d(-ρA)/dlogp = -ρA


# ---- entropy-based advantage shaping ---------------------------------------------------------


def test_entropy_advantage_by_hand():
    adv = t([1.0, -1.0, 0.0])
    entropy = t([[0.5, 3.0], [0.5, 3.0], [0.5, 3.0]])
    shaped = grpo.entropy_advantage(adv, entropy, alpha=0.4, kappa=2.0)
    # A=+1: H 0.5 -> min(0.2, 0.5) = 0.2 -> 1.2;  H 3 -> min(1.2, 0.5) = 0.5 -> 1.5
    # A=-1: H 0.5 -> -1 + 0.2 = -0.8;             H 3 -> -1 + 0.5 = -0.5
    # A=0:  min(., 0) = 0 -> 0
    assert shaped.tolist() == [pytest.approx([1.2, 1.5]), pytest.approx([-0.8, -0.5]), [0.0, 0.0]]


def test_entropy_advantage_detaches_the_entropy():
    entropy = torch.ones(1, 2, requires_grad=True)
    shaped = grpo.entropy_advantage(torch.tensor([1.0]), entropy)
    assert not shaped.requires_grad


@given(st.floats(-5, 5), st.floats(0, 20), st.floats(0, 2), st.floats(1.01, 10))
def test_entropy_term_never_flips_a_sign(a, h, alpha, kappa):
    shaped = grpo.entropy_advantage(t([a]), t([[h]]), alpha=alpha, kappa=kappa).item()
    if a < 0:
        assert shaped <= 0  # strictly negative up to float underflow of |a| (1 - 1/κ)
    else:
        assert shaped >= a
