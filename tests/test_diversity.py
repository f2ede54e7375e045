"""Eqs. 4-8 of Syn-GRPO against values computed by hand."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syngrpo.algo.diversity import (
    DiversitySmoother,
    diversity_reward,
    ground_truth_diversity,
    select_description,
    usable_description,
)

# ---- eq. 4: V(q) = var(R_acc) / (1/4), clipped ------------------------------------------


def test_half_right_half_wrong_is_maximal_diversity():
    # mean 0.5, every squared deviation 0.25 -> population variance 0.25 -> 0.25 / 0.25 = 1
    assert ground_truth_diversity([1.0, 0.0, 1.0, 0.0]) == pytest.approx(1.0)


def test_three_right_one_wrong():
    # mean 0.75; squared deviations 3 * 0.0625 + 0.5625 = 0.75; / 4 -> variance 0.1875; / 0.25 -> 0.75
    assert ground_truth_diversity([1.0, 1.0, 1.0, 0.0]) == pytest.approx(0.75)


def test_continuous_ious_use_the_population_variance():
    # mean 0.4; squared deviations 0.04 + 0 + 0.04 = 0.08; / 3 (population, not 2) = 0.026667; / 0.25 = 0.106667
    assert ground_truth_diversity([0.2, 0.4, 0.6]) == pytest.approx(0.08 / 3 / 0.25)


def test_identical_rewards_and_tiny_groups_have_no_diversity():
    assert ground_truth_diversity([0.7] * 6) == 0.0
    assert ground_truth_diversity([0.3]) == 0.0
    assert ground_truth_diversity([]) == 0.0


def test_rewards_outside_unit_range_are_clipped_to_one():
    # mean 0.5; squared deviations 2.25 + 2.25 -> variance 2.25 -> 9.0 -> clipped to 1
    assert ground_truth_diversity([-1.0, 2.0]) == 1.0


def test_non_finite_rewards_are_a_bug_not_a_number():
    with pytest.raises(ValueError, match="finite"):
        ground_truth_diversity([0.0, float("nan")])


@given(st.lists(st.floats(0, 1), max_size=16))
def test_diversity_of_unit_rewards_is_in_unit_range(values):
    assert 0.0 <= ground_truth_diversity(values) <= 1.0


# ---- diversity smoothing ---------------------------------------------------------------


def test_smoothing_recurrence_over_three_steps():
    s = DiversitySmoother(gamma=0.7)
    # step 1: V̄_1 = (0.2 + 0.6) / 2 = 0.4; G_1 = V̄_1 = 0.4; ratio 1 -> Ṽ = V
    assert s.update([0.2, 0.6]) == pytest.approx([0.2, 0.6])
    assert s.global_avg == pytest.approx(0.4)
    # step 2: V̄_2 = 0.2; G_2 = 0.7 * 0.4 + 0.3 * 0.2 = 0.28 + 0.06 = 0.34; ratio 0.34 / 0.2 = 1.7
    #         Ṽ = [0.1 * 1.7, 0.3 * 1.7] = [0.17, 0.51]
    assert s.update([0.1, 0.3]) == pytest.approx([0.17, 0.51])
    assert s.global_avg == pytest.approx(0.34)
    # step 3: V̄_3 = 0.7; G_3 = 0.7 * 0.34 + 0.3 * 0.7 = 0.238 + 0.21 = 0.448; ratio 0.448 / 0.7 = 0.64
    #         Ṽ = [0.5 * 0.64, 0.9 * 0.64] = [0.32, 0.576]
    assert s.update([0.5, 0.9]) == pytest.approx([0.32, 0.576])
    assert s.global_avg == pytest.approx(0.448)
    assert s.step == 3
    assert s.last["ratio"] == pytest.approx(0.64)
    assert s.last["batch_avg"] == pytest.approx(0.7)
    assert s.last["smoothed_avg"] == pytest.approx((0.32 + 0.576) / 2)


def test_smoothed_diversity_is_clipped_to_one():
    s = DiversitySmoother(gamma=0.7)
    s.update([0.8, 0.8])  # G_1 = 0.8
    # V̄_2 = 0.4; G_2 = 0.56 + 0.12 = 0.68; ratio 1.7 -> [0.17, 1.19 -> 1.0]
    assert s.update([0.1, 0.7]) == pytest.approx([0.17, 1.0])


def test_zero_batch_diversity_gives_zero_targets_and_still_moves_the_average():
    s = DiversitySmoother(gamma=0.7)
    s.update([0.4])  # G_1 = 0.4
    assert s.update([0.0, 0.0]) == [0.0, 0.0]  # 0/0: documented as Ṽ = 0
    assert s.global_avg == pytest.approx(0.7 * 0.4)  # G_2 = 0.28


def test_zero_first_batch_starts_the_average_at_zero():
    s = DiversitySmoother(gamma=0.7)
    assert s.update([0.0, 0.0]) == [0.0, 0.0]
    assert s.global_avg == 0.0
    # V̄_2 = 0.5; G_2 = 0 + 0.3 * 0.5 = 0.15; ratio 0.3 -> Ṽ = 0.15
    assert s.update([0.5]) == pytest.approx([0.15])


def test_gamma_one_freezes_the_first_batch_average():
    s = DiversitySmoother(gamma=1.0)
    s.update([0.5])
    # G stays 0.5; V̄_2 = 0.25; ratio 2 -> [0.2, 0.6]
    assert s.update([0.1, 0.4]) == pytest.approx([0.2, 0.8])


def test_disabled_smoothing_returns_raw_diversity_but_tracks_the_average():
    s = DiversitySmoother(gamma=0.7, enabled=False)
    s.update([0.2, 0.6])
    assert s.update([0.1, 0.3]) == pytest.approx([0.1, 0.3])
    assert s.global_avg == pytest.approx(0.34)


def test_empty_batch_changes_nothing():
    s = DiversitySmoother()
    s.update([0.5])
    before = s.state_dict()
    assert s.update([]) == []
    assert s.state_dict() == before


def test_invalid_gamma_is_rejected():
    with pytest.raises(ValueError, match="gamma"):
        DiversitySmoother(gamma=1.5)


def test_state_dict_round_trips_through_json_and_continues_identically():
    a = DiversitySmoother(gamma=0.7)
    a.update([0.2, 0.6])
    a.update([0.1, 0.3])
    state = json.loads(json.dumps(a.state_dict()))
    b = DiversitySmoother(gamma=0.1)  # the loaded state overrides gamma
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert b.update([0.5, 0.9]) == a.update([0.5, 0.9])
    assert b.step == a.step == 3


def test_incomplete_state_is_rejected():
    with pytest.raises(ValueError, match="lacks"):
        DiversitySmoother().load_state_dict({"gamma": 0.7})


@given(st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=8), min_size=1, max_size=5), st.floats(0, 1))
def test_smoothed_diversity_stays_in_unit_range(batches, gamma):
    s = DiversitySmoother(gamma=gamma)
    for batch in batches:
        out = s.update(batch)
        assert len(out) == len(batch)
        assert all(0.0 <= v <= 1.0 for v in out)


# ---- eq. 6: R_diversity = 1 - |v - Ṽ| ------------------------------------------------------


def test_diversity_reward_by_hand():
    assert diversity_reward(0.3, 0.5) == pytest.approx(0.8)  # 1 - |0.3 - 0.5|
    assert diversity_reward(0.5, 0.5) == 1.0
    assert diversity_reward(1.0, 0.0) == 0.0


def test_unparsable_score_earns_nothing():
    assert diversity_reward(None, 0.4) == 0.0
    assert diversity_reward(float("nan"), 0.4) == 0.0
    assert diversity_reward(float("inf"), 0.4) == 0.0


def test_non_finite_target_is_a_bug():
    with pytest.raises(ValueError, match="finite"):
        diversity_reward(0.5, float("nan"))


@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), st.floats(-2, 3))
def test_diversity_reward_stays_in_unit_range(predicted, target):
    assert 0.0 <= diversity_reward(predicted, target) <= 1.0


# ---- eq. 8: i* = argmax R_diversity over usable descriptions ---------------------------------


def test_selects_the_best_calibrated_description():
    assert select_description(["a", "b", "c"], [0.2, 0.9, 0.5]) == 1


def test_ties_go_to_the_lowest_index():
    assert select_description(["a", "b", "c", "d"], [0.5, 0.9, 0.9, 0.2]) == 1


def test_ties_are_drawn_with_an_rng_when_given():
    picks = {select_description(["a", "b", "c"], [0.9, 0.9, 0.1], rng=random.Random(seed)) for seed in range(40)}
    assert picks == {0, 1}


def test_unusable_descriptions_are_skipped():
    descriptions = [None, "   ", "x" * 501, "a beach", "a forest"]
    assert select_description(descriptions, [1.0, 1.0, 1.0, 0.3, 0.2]) == 3
    assert select_description(descriptions, [1.0, 1.0, 1.0, 0.3, 0.2], max_chars=1000) == 2


def test_no_usable_description_selects_nothing():
    assert select_description([None, "", " \n"], [0.9, 0.8, 0.7]) is None
    assert select_description([], []) is None


def test_non_finite_rewards_are_skipped():
    assert select_description(["a", "b"], [float("nan"), 0.1]) == 1


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one each"):
        select_description(["a"], [0.1, 0.2])


def test_usable_description_rules():
    assert usable_description(" a dog on grass ")
    assert not usable_description("")
    assert not usable_description(None)
    assert not usable_description(42)  # type: ignore[arg-type]
    assert not usable_description("ab", max_chars=1)


@given(st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=10)), st.floats(0, 1)), max_size=8))
def test_selected_index_has_a_usable_description_and_the_best_reward(pairs):
    descriptions = [d for d, _ in pairs]
    rewards = [r for _, r in pairs]
    i = select_description(descriptions, rewards)
    usable = [k for k, d in enumerate(descriptions) if usable_description(d)]
    if not usable:
        assert i is None
    else:
        assert i in usable
        assert rewards[i] == max(rewards[k] for k in usable)
        assert i == min(k for k in usable if rewards[k] == rewards[i])
