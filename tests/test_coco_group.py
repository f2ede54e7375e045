"""A GRPO group's OVD accuracy in one AP pass (syngrpo.perception.coco_group) equals the accuracy scored one by one."""

from __future__ import annotations

import json
import random

import pytest

from syngrpo.perception import vlmr1
from syngrpo.perception.coco_group import (
    _group_arrays,
    coco_ap_batch_arrays,
    coco_ap_group,
    ovd_reward_batch,
    ovd_reward_group,
)
from syngrpo.perception.detection import coco_ap, ovd_reward
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response
from syngrpo.perception.rewards import AccuracyReward, PerResponseReward
from syngrpo.types import Sample
from tasks_ovd.task import OvdTask

LABELS = ["circle", "square", "triangle", "star"]


def _box(rng: random.Random) -> list[float]:
    x, y = rng.uniform(0, 200), rng.uniform(0, 200)
    return [round(x, 1), round(y, 1), round(x + rng.uniform(5, 50), 1), round(y + rng.uniform(5, 50), 1)]


def _group(rng: random.Random, gts: list[dict], g: int = 6) -> list[list[dict]]:
    out = []
    for _ in range(g):
        preds = []
        for o in gts:
            if rng.random() < 0.7:
                preds.append({"bbox_2d": [v + rng.uniform(-4, 4) for v in o["bbox_2d"]],
                              "label": o["label"] if rng.random() < 0.8 else rng.choice(LABELS + ["Circle"])})
        preds += [{"bbox_2d": _box(rng), "label": rng.choice(LABELS + ["unicorn"])} for _ in range(rng.randint(0, 3))]
        if preds and rng.random() < 0.4:  # a second box on an object already found: must not match it again
            dup = rng.choice(preds)
            preds.append({"bbox_2d": [v + rng.uniform(-2, 2) for v in dup["bbox_2d"]], "label": dup["label"]})
        if rng.random() < 0.15:
            preds = []
        out.append(preds)
    return out


@pytest.mark.parametrize("drop", [False, True])
def test_group_ap_equals_one_by_one(drop):
    rng = random.Random(3)
    for _ in range(40):
        gts = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS[:3])} for _ in range(rng.randint(1, 8))]
        group = _group(rng, gts)
        expected = [coco_ap(gts, p, drop_unknown_labels=drop) for p in group]
        assert coco_ap_group(gts, group, drop_unknown_labels=drop) == pytest.approx(expected, abs=1e-12)
        expected = [ovd_reward(gts, p, drop_unknown_labels=drop) for p in group]
        assert ovd_reward_group(gts, group, drop_unknown_labels=drop) == pytest.approx(expected, abs=1e-12)
    assert ovd_reward_group([], [[], [{"bbox_2d": [0, 0, 1, 1], "label": "a"}]]) == [1.0, 0.0]


def test_more_detections_than_max_dets():
    rng = random.Random(0)
    gts = [{"bbox_2d": _box(rng), "label": "circle"} for _ in range(5)]
    group = [[{"bbox_2d": _box(rng), "label": "circle", "score": rng.random()} for _ in range(n)] for n in (3, 120)]
    expected = [coco_ap(gts, p, max_dets=7) for p in group]
    assert coco_ap_group(gts, group, max_dets=7) == pytest.approx(expected, abs=1e-12)


def test_ignored_ground_truth():
    rng = random.Random(5)
    for _ in range(20):
        gts = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS[:2])} for _ in range(4)]
        huge = {"bbox_2d": [0.0, 0.0, 2e5, 2e5], "label": gts[0]["label"]}  # area > 1e10: ignored by COCO
        gts.insert(1, huge)
        group = [p + [dict(huge)] * rng.randint(0, 2) for p in _group(rng, gts)]
        expected = [coco_ap(gts, p) for p in group]
        assert coco_ap_group(gts, group) == pytest.approx(expected, abs=1e-12)


def _text(items) -> str:
    return "<think>t</think><answer>```json\n" + json.dumps(items) + "\n```</answer>"


@pytest.mark.parametrize("profile", ["default", "vlmr1"])
def test_accuracy_reward_scores_each_group_in_one_call_with_the_same_values(profile, monkeypatch):
    rng = random.Random(1)
    task = OvdTask(profile=profile)
    samples, responses = [], []
    for k in range(4):
        gts = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS)} for _ in range(6)]
        sample = Sample(id=f"s{k}", task="ovd", image="x.png", problem="", solution=gts, width=256, height=256)
        texts = [_text(p) for p in _group(rng, gts)] + ["no answer", "<answer>```json\n{bad```</answer>",
                                                        _text([{"label": "circle", "bbox_2d": [1, "x", 2, 3]}])]
        samples += [sample] * len(texts)
        responses += [parse_response(t, "plain") for t in texts]
    reward = AccuracyReward()
    one_by_one = PerResponseReward.__call__(reward, responses, samples, task=task)
    calls = []
    real = task.accuracy_group
    monkeypatch.setattr(task, "accuracy_group", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(task, "accuracy_batch", None)  # a task with the group hook only
    grouped = reward(responses, samples, task=task)
    assert len(calls) == 4  # one call per sample's run of responses
    assert grouped == pytest.approx(one_by_one, abs=1e-12)
    assert len({round(v, 6) for v in grouped}) > 10  # not degenerate


def test_vlmr1_group_matches_vlmr1_reward_on_odd_items():
    gts = [{"bbox_2d": [10, 10, 50, 50], "label": "Dog"}, {"bbox_2d": [60, 60, 90, 90], "label": "cat"}]
    group = [None, [], ["text", {"label": "dog", "bbox_2d": [10, 10, 50, 50]}],
             [{"label": "Dog", "bbox_2d": [10, 10, 50, 50]}, {"label": "cat", "bbox_2d": [1e308, 0, 1e308, 5]}],
             [{"label": "cat", "bbox_2d": [60, 60, 90, 90]}, {"label": "Dog", "bbox_2d": [11, 10, 50, 50]}, 3],
             [{"label": "cat", "bbox_2d": [float("nan"), 60, 90, 90]}, {"label": "Dog", "bbox_2d": [10, 10, 50.0, 50]}],
             [{"label": "cat", "bbox_2d": [60, 60, float("inf"), 90]}, {"label": "Dog", "bbox_2d": [True, 10, 50, 5e1]}],
             [{"label": "cat", "bbox_2d": [60, 60, 10**400, 90]}, {"label": "cat", "bbox_2d": [60, 60, "90", 90]}]]
    assert vlmr1.ovd_reward_group(group, gts) == pytest.approx([vlmr1.ovd_reward(p, gts) for p in group], abs=1e-12)
    frame = ImageTransform(2.0, 0.5, 3.0, -1.0, 300, 300)  # boxes mapped, unclipped, before the AP
    assert vlmr1.ovd_reward_group(group, gts, frame) == pytest.approx(
        [vlmr1.ovd_reward(p, gts, frame) for p in group], abs=1e-12)


def test_a_subclass_overriding_accuracy_keeps_its_accuracy_in_the_group_path():
    class Halved(OvdTask):
        def accuracy(self, prediction, sample, *, frame=None):
            return 0.5 * super().accuracy(prediction, sample, frame=frame)

    rng = random.Random(2)
    gts = [{"bbox_2d": _box(rng), "label": "circle"} for _ in range(3)]
    sample = Sample(id="s", task="ovd", image="x.png", problem="", solution=gts, width=256, height=256)
    responses = [parse_response(_text(p), "plain") for p in _group(rng, gts)]
    task = Halved()
    expected = [task.accuracy(task.parse_answer(task.answer_text(r)), sample) for r in responses]
    assert AccuracyReward()(responses, [sample] * len(responses), task=task) == pytest.approx(expected, abs=1e-12)


# ---- a whole batch in one AP pass (issue 26 item 6) -------------------------------------------


def _batch(rng: random.Random, n_groups: int = 12) -> list[tuple[list[dict], list[list[dict]]]]:
    """Groups that differ in every way a batch's samples do: labels, counts, ignored boxes, sizes."""
    batch = []
    for k in range(n_groups):
        labels = rng.sample(LABELS, rng.randint(1, 4))
        gts = [{"bbox_2d": _box(rng), "label": rng.choice(labels)} for _ in range(rng.randint(0 if k % 5 == 4 else 1, 9))]
        if gts and rng.random() < 0.3:
            gts.insert(rng.randrange(len(gts)), {"bbox_2d": [0.0, 0.0, 2e5, 2e5], "label": gts[0]["label"]})  # ignored
        group = _group(rng, gts, g=rng.choice([1, 4, 6])) if gts else [[], [{"bbox_2d": _box(rng), "label": "star"}]]
        if k % 7 == 3:
            group = []  # a group with no completions
        batch.append((gts, group))
    return batch


@pytest.mark.parametrize("drop", [False, True])
def test_batch_in_one_pass_equals_group_by_group(drop):
    """Each completion meets only its own sample's ground truth and categories, though they share one pass."""
    rng = random.Random(11)
    for _ in range(15):
        batch = _batch(rng)
        expected = [ovd_reward_group(gts, group, drop_unknown_labels=drop) for gts, group in batch]
        got = ovd_reward_batch(batch, drop_unknown_labels=drop)
        assert [len(g) for g in got] == [len(g) for g in expected]
        for g, e in zip(got, expected, strict=True):
            assert g == pytest.approx(e, abs=1e-12)
        # the same, in chunks of a few detections each (the pass is cut where a batch grows large)
        arrays = [_group_arrays(gts, group, drop) for gts, group in batch if gts]
        whole = coco_ap_batch_arrays(arrays)
        chunked = coco_ap_batch_arrays(arrays, max_pass_detections=7)
        assert [len(g) for g in chunked] == [len(g) for g in whole]
        assert _flat(chunked) == pytest.approx(_flat(whole), abs=1e-12)
        assert _flat(whole) == pytest.approx(_flat([[coco_ap(gts, p, drop_unknown_labels=drop) for p in group]
                                                    for gts, group in batch if gts]), abs=1e-12)


def _flat(rows):
    return [v for row in rows for v in row]


def test_batch_with_more_detections_than_max_dets():
    rng = random.Random(4)
    batch = [([{"bbox_2d": _box(rng), "label": "circle"} for _ in range(n)],
              [[{"bbox_2d": _box(rng), "label": "circle", "score": rng.random()} for _ in range(d)] for d in (3, 40)])
             for n in (2, 6)]
    arrays = [_group_arrays(gts, group, False) for gts, group in batch]
    assert _flat(coco_ap_batch_arrays(arrays, max_dets=7)) == pytest.approx(
        [coco_ap(gts, p, max_dets=7) for gts, group in batch for p in group], abs=1e-12)


def test_a_malformed_completion_in_a_batch_is_named():
    good = [{"bbox_2d": [0, 0, 5, 5], "label": "a"}]
    with pytest.raises(ValueError, match=r"completion 1 \(group 1\)"):
        ovd_reward_batch([(good, [good]), (good, [good, [{"bbox_2d": [0, 0, 5], "label": "a"}]])])


@pytest.mark.parametrize("profile", ["default", "vlmr1"])
def test_accuracy_reward_scores_the_whole_batch_in_one_call_with_the_same_values(profile, monkeypatch):
    rng = random.Random(7)
    task = OvdTask(profile=profile)
    samples, responses, frames = [], [], []
    for k, (gts, group) in enumerate(_batch(rng, 10)):
        sample = Sample(id=f"s{k}", task="ovd", image="x.png", problem="", solution=gts, width=256, height=256)
        texts = [_text(p) for p in group] + ["no answer", _text([{"label": "circle", "bbox_2d": [1, "x", 2, 3]}])]
        frame = ImageTransform(0.5, 0.5, 0.0, 0.0, 128, 128) if k % 2 else None  # the model saw a resized image
        samples += [sample] * len(texts)
        responses += [parse_response(t, "plain") for t in texts]
        frames += [frame] * len(texts)
    reward = AccuracyReward()
    one_by_one = PerResponseReward.__call__(reward, responses, samples, task=task, frames=frames)
    calls = []
    real = task.accuracy_batch
    monkeypatch.setattr(task, "accuracy_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(task, "accuracy_group", lambda *a, **k: pytest.fail("a group scored on its own"))
    batched = reward(responses, samples, task=task, frames=frames)
    assert len(calls) == 1  # one call for the whole batch
    assert batched == pytest.approx(one_by_one, abs=1e-12)
    assert len({round(v, 6) for v in batched}) > 10  # not degenerate


def test_vlmr1_batch_matches_vlmr1_reward_per_group_with_its_own_frame():
    rng = random.Random(9)
    groups = []
    for k, (gts, group) in enumerate(_batch(rng, 8)):
        items = [p + (["text", 3] if j % 3 == 0 else []) for j, p in enumerate(group)] + [None]
        frame = ImageTransform(2.0, 0.5, 3.0, -1.0, 300, 300) if k % 2 else None
        groups.append((items, gts, frame))
    got = vlmr1.ovd_reward_batch(groups)
    assert [len(g) for g in got] == [len(items) for items, _, _ in groups]
    assert _flat(got) == pytest.approx([vlmr1.ovd_reward(p, gts, frame) for items, gts, frame in groups
                                        for p in items], abs=1e-12)
