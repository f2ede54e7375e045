"""Tests of the counting plugin, written the way a plugin author writes them: with syngrpo.testing.

They need neither an install (``pythonpath = ["."]`` in pyproject.toml) nor the
syngrpo test suite; syngrpo's own ``tests/test_example_plugin.py`` checks the
installed package through its entry point.
"""

from __future__ import annotations

import random

import pytest
from syngrpo_counting import plugin
from syngrpo_counting.task import CountingTask, graded_score, parse_count

from syngrpo.api import ImageTransform
from syngrpo.testing import check_task_contract, registry_with


@pytest.fixture
def task() -> CountingTask:
    return registry_with(plugin).create("tasks", "counting")


def test_the_hook_registers_the_task_under_its_name():
    registry = registry_with(plugin)
    assert registry.names("tasks") == ["counting"]
    assert isinstance(registry.create("tasks", "counting", reward="graded"), CountingTask)


@pytest.mark.parametrize("reward", ["exact", "graded"])
def test_the_task_keeps_the_syngrpo_task_contract(tmp_path, reward):
    report = check_task_contract(CountingTask(reward=reward), tmp_path, n=4)
    assert report.skipped == {}


@pytest.mark.parametrize("text, expected", [
    ("3", 3), (" 3. ", 3), ("3.0", 3), ("+12", 12), ("0", 0), ("Three", 3), ("twenty.", 20),
    ("there are 3", None), ("3 or 4", None), ("-1", None), ("3.5", None), ("", None), (None, None), ("1e3", None),
])
def test_parse_count_reads_a_bare_integer_or_number_word_only(text, expected):
    assert parse_count(text) == expected


def test_parse_count_never_raises_on_random_text():
    rng = random.Random(0)
    alphabet = "0123456789 .+-eE[]{}\"'abcthreeç\n\x00"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        got = parse_count(text)
        assert got is None or (isinstance(got, int) and got >= 0)


def test_exact_reward_is_all_or_nothing_and_graded_gives_partial_credit(tmp_path):
    (sample,) = CountingTask().make_toy_dataset(tmp_path, n=1, seed=3, min_count=4, max_count=4)
    exact, graded = CountingTask(), CountingTask(reward="graded")
    assert [exact.accuracy(p, sample) for p in (4, 3, 5, None)] == [1.0, 0.0, 0.0, 0.0]
    assert [graded.accuracy(p, sample) for p in (4, 3, 8, 0)] == [1.0, 0.75, 0.5, 0.0]
    assert graded_score(0, 0) == 1.0


def test_evaluate_is_exact_match_accuracy(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path, n=4, seed=1)
    answers = [s.solution for s in samples]
    answers[0] += 1
    answers[1] = None
    assert task.evaluate(answers, samples) == {"accuracy": 0.5}


def test_toy_counts_match_the_listed_objects_and_foreground_is_the_counted_ones(tmp_path, task):
    for s in task.make_toy_dataset(tmp_path, n=8, seed=2, max_distractors=3):
        counted = [o for o in s.meta["objects"] if o["shape"] == s.meta["shape"]]
        assert s.solution == len(counted) >= 1
        assert task.foreground_boxes(s) == [tuple(float(v) for v in o["bbox_2d"]) for o in counted]
        assert f"How many {s.meta['shape']}s are there?" in task.question(s)


def test_resizing_keeps_the_count_and_a_crop_counts_again(tmp_path, task):
    s = task.make_toy_dataset(tmp_path, n=1, seed=0, min_count=3, max_count=3, max_distractors=0)[0]
    big = task.transform_sample(s, ImageTransform.resize(s.width, s.height, 2 * s.width, 2 * s.height), "big.png")
    assert big.solution == 3 and big.width == 2 * s.width
    assert big.meta["objects"][0]["bbox_2d"] == [2 * v for v in s.meta["objects"][0]["bbox_2d"]]
    # crop exactly around the first object: only it stays in the picture
    x1, y1, x2, y2 = s.meta["objects"][0]["bbox_2d"]
    cropped = task.transform_sample(s, ImageTransform.crop(x1, y1, x2, y2), "crop.png")
    assert cropped.solution == 1
    assert task.transform_solution(s.solution, ImageTransform.crop(x1, y1, x2, y2)) == 3  # no objects to see


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="reward"):
        CountingTask(reward="fuzzy")
    with pytest.raises(ValueError, match="shapes"):
        CountingTask(shapes=["blob"])
