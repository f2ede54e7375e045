"""The built-in reward functions: R_acc through a task, R_format; neither ever raises on model output."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syngrpo.builtin
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response, render_response
from syngrpo.perception.rewards import AccuracyReward, FormatReward, RewardFunction, RewardWarning
from syngrpo.perception.task import Task
from syngrpo.plugins import build_registry, make_plugin_manager
from syngrpo.types import Sample


class NumberTask(Task):
    """A toy task: the answer is a number x; accuracy is 1 - |x - solution| (clamped), in the original frame."""

    name = "number"

    def load(self, path, *, image_root=None):
        return []

    def make_toy_dataset(self, out_dir, *, n, seed, split="train", image_size=112, **options):
        return []

    def question(self, sample):
        return sample.problem

    def parse_answer(self, text):
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None

    def accuracy(self, prediction, sample, *, frame=None):
        if prediction is None or not math.isfinite(prediction):
            return 0.0
        if frame is not None:  # the "model frame" doubles values; map back
            prediction = prediction / frame.sx
        return max(0.0, 1.0 - abs(prediction - sample.solution))

    def evaluate(self, predictions, samples, *, frames=None):
        return {}

    def foreground_boxes(self, sample):
        return []

    def transform_solution(self, solution, transform):
        return solution


class BrokenTask(NumberTask):
    """A task whose accuracy has bugs: raises on negative answers, returns NaN on 7, 5.0 on 9."""

    def accuracy(self, prediction, sample, *, frame=None):
        if prediction is not None and prediction < 0:
            raise ZeroDivisionError("bug in the task")
        if prediction == 7:
            return float("nan")
        if prediction == 9:
            return 5.0
        return super().accuracy(prediction, sample, frame=frame)


def sample(solution: float = 0.5, i: int = 0) -> Sample:
    return Sample(
        id=f"s{i}", task="number", image="x.png", problem="pick a number", solution=solution, width=10, height=10
    )


def respond(answer: str, score: float = 0.5) -> object:
    return parse_response(render_response("t", answer, score=score, description="d", mode="syn"))


@pytest.fixture(scope="module")
def registry():
    return build_registry(make_plugin_manager([syngrpo.builtin], autoload=False))


def test_builtin_rewards_are_registered_and_satisfy_the_protocol(registry):
    assert {"accuracy", "format"} <= set(registry.names("rewards"))
    for name in ("accuracy", "format"):
        assert isinstance(registry.create("rewards", name), RewardFunction)


def test_accuracy_reward_asks_the_task(registry):
    reward = registry.create("rewards", "accuracy")
    responses = [respond("0.5"), respond("0.25"), respond("banana"), parse_response("no tags at all")]
    values = reward(responses, [sample(0.5)] * 4, task=NumberTask())
    # exact -> 1; |0.25 - 0.5| = 0.25 -> 0.75; unreadable answer -> 0; no <answer> -> 0
    assert values == pytest.approx([1.0, 0.75, 0.0, 0.0])


def test_accuracy_reward_passes_each_response_its_frame():
    frames = [ImageTransform(sx=2.0, sy=2.0), None]
    values = AccuracyReward()(
        [respond("1.0"), respond("1.0")], [sample(0.5), sample(0.5)], task=NumberTask(), frames=frames
    )
    # first: 1.0 in a 2x frame is 0.5 in the original -> 1; second: 1.0 vs 0.5 -> 0.5
    assert values == pytest.approx([1.0, 0.5])


def test_a_task_that_raises_or_misbehaves_scores_zero_with_a_warning():
    responses = [respond("-1"), respond("7"), respond("9"), respond("0.5")]
    with pytest.warns(RewardWarning) as record:
        values = AccuracyReward()(responses, [sample(0.5, i) for i in range(4)], task=BrokenTask())
    assert values == [0.0, 0.0, 1.0, 1.0]  # raise -> 0, NaN -> 0, 5.0 clipped to 1, normal
    messages = " ".join(str(w.message) for w in record)
    assert "ZeroDivisionError" in messages and "s0" in messages and "nan" in messages


def test_format_reward_is_one_only_for_well_formed_responses():
    responses = [respond("1"), parse_response("<answer>1</answer>"), parse_response("")]
    assert FormatReward()(responses, [sample()] * 3, task=NumberTask()) == [1.0, 0.0, 0.0]


def test_plain_mode_responses_get_format_reward_for_think_and_answer():
    responses = [parse_response("<think>a</think><answer>1</answer>", "plain")]
    assert FormatReward()(responses, [sample()], task=NumberTask()) == [1.0]


def test_mismatched_lengths_are_a_wiring_error():
    with pytest.raises(ValueError, match="samples"):
        FormatReward()([respond("1")], [], task=NumberTask())
    with pytest.raises(ValueError, match="frames"):
        AccuracyReward()([respond("1")], [sample()], task=NumberTask(), frames=[None, None])


@settings(max_examples=200)
@given(st.text(), st.sampled_from(["syn", "plain"]), st.floats(-1, 2))
def test_rewards_take_any_text_and_stay_in_unit_range(text, mode, solution):
    responses = [parse_response(text, mode), parse_response(f"<answer>{text}</answer>", mode)]
    samples = [sample(solution), sample(solution)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RewardWarning)
        for reward in (AccuracyReward(), FormatReward()):
            for task in (NumberTask(), BrokenTask()):
                values = reward(responses, samples, task=task)
                assert len(values) == 2
                assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)
