"""DAPO's dynamic-sampling rules on plain numbers (syngrpo.algo.dynamic_sampling), against hand values."""

from __future__ import annotations

import pytest

from syngrpo.algo.dynamic_sampling import SamplingReport, groups_with_signal, refill_size


def test_a_group_trains_when_its_values_are_not_all_equal():
    values = [1, 1, 1, 0, 1, 0, 0.3, 0.3, 0.3, 0, 0, 0]  # G = 3: all right, mixed, all equal (not 0/1), all wrong
    assert groups_with_signal(values, 3) == [False, True, False, False]
    assert groups_with_signal([0.5, 0.5000001], 2) == [True]  # any spread counts (verl: std > 0)


def test_a_group_of_one_never_trains_and_is_not_an_error():
    assert groups_with_signal([1, 0, 0.5], 1) == [False, False, False]


def test_values_that_do_not_split_into_groups_are_refused():
    with pytest.raises(ValueError, match="groups of 4"):
        groups_with_signal([1, 0, 1], 4)


@pytest.mark.parametrize(("missing", "kept", "drawn", "batch", "expected"), [
    (0, 3, 8, 8, 0),  # nothing missing: no draw
    (5, 0, 8, 8, 8),  # nothing kept yet: a whole batch
    (2, 4, 8, 8, 4),  # half the groups kept: twice what is missing
    (3, 1, 8, 8, 8),  # 1 in 8 kept: 24 wanted, capped at the batch
    (3, 8, 8, 8, 3),  # everything kept so far: what is missing, never less
    (1, 2, 3, 8, 2),  # ceil(1 * 3 / 2)
    (0, 0, 8, 8, 0),  # nothing missing, even when nothing was kept: no draw (not a whole batch)
    (1, 1, 2, 8, 2),  # one kept is a share like any other: ceil(1 * 2 / 1), not a whole batch
    (1, 1, 1, 8, 1),  # the first prompt drawn had signal: draw what is missing
])
def test_a_refill_draws_what_is_missing_over_the_share_kept_so_far(missing, kept, drawn, batch, expected):
    assert refill_size(missing, kept, drawn, batch) == expected


def test_the_report_names_what_the_step_cost():
    m = SamplingReport(tries=3, prompts_drawn=16, groups_dropped=10, groups_surplus=1, groups_filled=0).metrics()
    assert m == {"dynamic/tries": 3.0, "dynamic/prompts_drawn": 16.0, "dynamic/groups_dropped": 10.0,
                 "dynamic/zero_variance_frac": 10 / 16, "dynamic/groups_surplus": 1.0, "dynamic/groups_filled": 0.0}


def test_the_zero_variance_share_of_one_prompt_and_of_none():
    assert SamplingReport(prompts_drawn=1, groups_dropped=1).metrics()["dynamic/zero_variance_frac"] == 1.0
    assert SamplingReport(prompts_drawn=0).metrics()["dynamic/zero_variance_frac"] == 0.0


@pytest.mark.parametrize(("metric", "expected"), [("accuracy", [False, True]), ("reward", [True, False])])
def test_the_collector_filters_on_the_configured_metric(metric, expected):
    """Group 0: every answer right, formats differ (the total varies, R_acc does not); group 1: R_acc varies,
    the format reward cancels it out in the total. ``accuracy`` (DAPO's rule) keeps group 1, ``reward`` group 0."""
    from types import SimpleNamespace

    from syngrpo.config import TrainConfig
    from syngrpo.train.rewards import StepRewards
    from syngrpo.train.rollouts import RolloutCollector

    acc, fmt = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0], [0.0, 0.5, 1.0, 0.0, 1.0, 0.0]
    rewards = StepRewards(group_size=3, parts={"accuracy": acc, "format": fmt}, accuracy=acc,
                          totals=[a + f for a, f in zip(acc, fmt, strict=True)], v=[0.0, 0.0], v_smoothed=[0.0, 0.0])
    cfg = TrainConfig.model_validate({"algorithm": {"dynamic_sampling": {"enabled": True, "metric": metric}}})
    # only the config is read by the choice of groups; the rest of the collector is not reached here
    collector = RolloutCollector(cfg, pool=None, par=None, engine=None, bundle=None, task=None, rewards=None,
                                 group_size=3, response_mode="plain", sampling=None, seed=None)
    assert collector._signal(SimpleNamespace(rewards=rewards)) == expected
