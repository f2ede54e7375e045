"""The ``vlmr1`` metric profile of REC and OVD: VLM-R1's parsing rules, hand values, properties.

Every expected number below is worked out by hand from VLM-R1's rules (syngrpo/perception/vlmr1.py states
them); each case is one where the default profile gives a different number, so a profile that
fell back to the default parsing fails here.  Scores go through ``AccuracyReward`` (the training
reward) and ``Task.answer_text(..., whole_text_fallback=True)`` (what ``syngrpo eval`` calls).
"""

from __future__ import annotations

import json

import pytest
from coco_reference import pycocotools_ap
from hypothesis import given, settings
from hypothesis import strategies as st

from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response
from syngrpo.perception.rewards import AccuracyReward
from syngrpo.perception.vlmr1 import answer_blocks, json_fence_items, rec_box, rec_iou
from syngrpo.testing import check_task_contract
from syngrpo.types import Sample
from tasks_ovd.task import OvdTask
from tasks_rec.task import RecTask

REC = RecTask(profile="vlmr1")
REC_DEFAULT = RecTask()
OVD = OvdTask(profile="vlmr1")
OVD_DEFAULT = OvdTask()
GT = [{"bbox_2d": [10.0, 10.0, 30.0, 30.0], "label": "cat"}, {"bbox_2d": [50.0, 20.0, 90.0, 60.0], "label": "dog"}]


def rec_sample(box=(10.0, 20.0, 50.0, 60.0)) -> Sample:
    return Sample(id="r", task="rec", image="/nonexistent.png", problem="x", solution=list(box), width=100, height=80)


def ovd_sample(solution=GT) -> Sample:
    return Sample(id="o", task="ovd", image="/nonexistent.png", problem="", solution=list(solution),
                  width=100, height=80)


def reward(task, text: str, sample: Sample, frame=None) -> float:
    """The training reward R_acc of one completion (plain response mode: <think><answer>)."""
    return AccuracyReward()([parse_response(text, "plain")], [sample], task=task,
                            frames=None if frame is None else [frame])[0]


def fence(objects) -> str:
    return "```json\n" + json.dumps(objects) + "\n```"


def test_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile must be one of default, vlmr1"):
        RecTask(profile="VLM-R1")
    with pytest.raises(ValueError, match="profile must be one of"):
        OvdTask(profile="coco")


# ---- REC ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "vlmr1", "default"), [
    # the first answer block counts, not the last
    ("<think>a</think><answer>[10, 20, 50, 60]</answer><answer>[0, 0, 5, 5]</answer>", 1.0, 1.0),
    ("<think>a</think><answer>[0, 0, 5, 5]</answer><answer>[10, 20, 50, 60]</answer>", 0.0, 0.0),
    # integers only, "[a, b, c, d]" with a comma then optional whitespace
    ("<think>a</think><answer>[10.0, 20, 50, 60]</answer>", 0.0, 1.0),
    ("<think>a</think><answer>[10 ,20, 50, 60]</answer>", 0.0, 1.0),
    ("<think>a</think><answer>[ 10, 20, 50, 60]</answer>", 0.0, 1.0),
    ("<think>a</think><answer>(10, 20, 50, 60)</answer>", 0.0, 1.0),
    ("<think>a</think><answer>[10,20,50,60]</answer>", 1.0, 1.0),
    ('<think>a</think><answer>{"bbox_2d": [10,\n 20, 50, 60]}</answer>', 1.0, 1.0),
    # the first integer match wins, even when a later one is right
    ("<think>a</think><answer>[1, 2, 3, 4] or [10, 20, 50, 60]</answer>", 0.0, 0.0),
    # corners in the wrong order never match (the default reorders them)
    ("<think>a</think><answer>[50, 60, 10, 20]</answer>", 0.0, 1.0),
    # no answer block: nothing
    ("[10, 20, 50, 60]", 0.0, 0.0),
])
def test_rec_reads_the_answer_as_vlmr1_does(text, vlmr1, default):
    assert reward(REC, text, rec_sample()) == pytest.approx(vlmr1, abs=1e-12)
    assert reward(REC_DEFAULT, text, rec_sample()) == pytest.approx(default, abs=1e-12)


def test_rec_iou_uses_inclusive_pixels():
    # overlap 5 x 5 px: inter = (9 - 5 + 1)^2 = 25, union = 100 + 100 - 25 = 175 (as the plain IoU)
    assert rec_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    # an overlap of exactly one pixel column is no overlap (plain IoU: 10 / 190)
    assert rec_iou((0, 0, 10, 10), (9, 0, 19, 10)) == 0.0
    # two pixels: inter = (10 - 8) * 10 = 20, union = 200 - 20
    assert rec_iou((0, 0, 10, 10), (8, 0, 18, 10)) == pytest.approx(20 / 180)
    # degenerate boxes divide by zero there: 0 here
    assert rec_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 0.0
    assert rec_iou((50, 60, 10, 20), (10, 20, 50, 60)) == 0.0


def test_rec_boxes_are_not_clipped_to_the_image():
    # gt in the image corner (100 x 80); the prediction runs 40 px past both edges
    sample = rec_sample((60.0, 40.0, 100.0, 80.0))
    text = "<think>a</think><answer>[60, 40, 140, 120]</answer>"
    # inter = 40 * 40 = 1600 (corners 60..99, 40..79); union = 80 * 80 + 40 * 40 - 1600 = 6400
    assert reward(REC, text, sample) == pytest.approx(0.25)
    assert reward(REC_DEFAULT, text, sample) == pytest.approx(1.0)  # clipped to the image first


def test_rec_box_is_mapped_back_from_the_model_input_frame_unclipped():
    frame = ImageTransform.resize(100, 80, 200, 160)  # the model saw the image at twice the size
    assert reward(REC, "<think>a</think><answer>[20, 40, 100, 120]</answer>", rec_sample(), frame) == 1.0
    # [0, 0, 40, 40] at half scale is [0, 0, 20, 20]: inter (19 - 10 + 1) * (19 - 20 + 1) -> no overlap in y
    assert reward(REC, "<think>a</think><answer>[0, 0, 40, 40]</answer>", rec_sample(), frame) == 0.0


def test_rec_eval_never_falls_back_to_the_whole_text():
    parsed = parse_response("no tags, just [10, 20, 50, 60]", "plain")
    assert REC.answer_text(parsed, whole_text_fallback=True) is None
    assert REC_DEFAULT.answer_text(parsed, whole_text_fallback=True) == "no tags, just [10, 20, 50, 60]"
    predictions = [REC.parse_answer(REC.answer_text(parse_response(t, "plain"), whole_text_fallback=True))
                   for t in ("<answer>[10, 20, 50, 60]</answer>", "<answer>[10, 20, 50.5, 60]</answer>",
                             "[10, 20, 50, 60]", "<answer>[10, 20, 30, 40]</answer>")]
    metrics = REC.evaluate(predictions, [rec_sample()] * 4)
    # IoUs 1, 0, 0 and [10,20,30,40] vs [10,20,50,60]: 400 / 1600 = 0.25
    assert metrics == {"acc@0.5": pytest.approx(1 / 4), "mean_iou": pytest.approx(1.25 / 4)}


def test_rec_box_reads_digits_only():
    assert rec_box("[1, 2, 3, 4]") == (1, 2, 3, 4)
    assert rec_box("[-1, 2, 3, 4]") is None
    assert rec_box("[1, 2, 3, " + "9" * 5000 + "]") is None  # more digits than int() takes: 0, as there
    assert rec_box(None) is None


# ---- OVD ---------------------------------------------------------------------------------


def ovd_text(*answers: str) -> str:
    return "<think>a</think>" + "".join(f"<answer>{a}</answer>" for a in answers)


def test_ovd_reads_the_last_answer_block_and_its_last_json_fence():
    wrong = fence([{"bbox_2d": [0, 0, 5, 5], "label": "cat"}])
    text = ovd_text(fence(GT), wrong + " then, corrected: " + fence(GT))
    assert reward(OVD, text, ovd_sample()) == 1.0
    text = ovd_text(fence(GT) + wrong, wrong)
    assert reward(OVD, text, ovd_sample()) == 0.0
    assert answer_blocks("<answer> a </answer><answer>b</answer><answer>unclosed") == ["a", "b"]


def test_ovd_labels_must_equal_a_ground_truth_label_exactly():
    preds = [{"bbox_2d": [10, 10, 30, 30], "label": "Cat"}, {"bbox_2d": [50, 20, 90, 60], "label": "dog"}]
    # "Cat" is dropped: AP(cat) = 0, AP(dog) = 1, mean 0.5; N_pred = N_gt = 2
    assert reward(OVD, ovd_text(fence(preds)), ovd_sample()) == pytest.approx(0.5)
    assert reward(OVD_DEFAULT, ovd_text(fence(preds)), ovd_sample()) == pytest.approx(1.0)


def test_unknown_labels_are_dropped_from_the_ap_but_counted_by_the_length_factor():
    preds = GT + [{"bbox_2d": [0, 0, 8, 8], "label": "bird"}]
    # vlmr1: AP over cat and dog = 1, times min(1, 2/3)
    assert reward(OVD, ovd_text(fence(preds)), ovd_sample()) == pytest.approx(2 / 3)
    # default: "bird" is a category with AP 0: mean(1, 1, 0) = 2/3, times 2/3
    assert reward(OVD_DEFAULT, ovd_text(fence(preds)), ovd_sample()) == pytest.approx(4 / 9)
    # only unknown labels: nothing is kept, 0
    assert reward(OVD, ovd_text(fence(preds[2:])), ovd_sample()) == 0.0


@pytest.mark.parametrize("answer", ["None", fence([]), "no objects", "```json\n[{]\n```", '[{"bbox_2d": [1, 2, 3, 4]}]'])
def test_a_none_ground_truth_scores_one_for_anything_that_parses_to_an_empty_list(answer):
    assert reward(OVD, ovd_text(answer), ovd_sample([])) == 1.0


def test_a_missing_fence_or_invalid_json_is_an_empty_prediction():
    bare = json.dumps(GT)  # the default profile reads a bare list; vlmr1 needs the fence
    assert reward(OVD, ovd_text(bare), ovd_sample()) == 0.0
    assert reward(OVD_DEFAULT, ovd_text(bare), ovd_sample()) == 1.0
    assert reward(OVD, ovd_text("```json\n[{'bbox_2d': [10, 10, 30, 30], 'label': 'cat'}]\n```"), ovd_sample()) == 0.0
    assert reward(OVD, ovd_text(fence([{"bbox_2d": [1, 2, 3, 4], "label": "cat"}])), ovd_sample([])) == 0.0
    assert reward(OVD, "<think>no answer</think>", ovd_sample([])) == 0.0  # no answer block at all
    assert json_fence_items('```json\n{"a": 1, "b": 2}\n```') == ["a", "b"]  # iterated as VLM-R1 does
    assert json_fence_items("```json\n3\n```") == []


def test_ovd_boxes_are_not_clipped():
    gt = [{"bbox_2d": [80.0, 60.0, 100.0, 80.0], "label": "cat"}]
    text = ovd_text(fence([{"bbox_2d": [80, 60, 120, 100], "label": "cat"}]))
    # IoU 400 / 1600 = 0.25 < 0.5 at every threshold: AP 0 (the default clips it to the gt box: 1)
    assert reward(OVD, text, ovd_sample(gt)) == 0.0
    assert reward(OVD_DEFAULT, text, ovd_sample(gt)) == pytest.approx(1.0)


def test_ovd_eval_counts_dropped_items_as_predictions():
    texts = [ovd_text(fence(GT + [{"bbox_2d": [0, 0, 8, 8], "label": "bird"}])), "<answer>None</answer>"]
    predictions = [OVD.parse_answer(OVD.answer_text(parse_response(t, "plain"), whole_text_fallback=True))
                   for t in texts]
    metrics = OVD.evaluate(predictions, [ovd_sample(), ovd_sample()])
    # image 1: 2 matches of 3 items; image 2: 0 of 0 against 2 gts
    assert metrics["gp"] == pytest.approx(2 / 3)
    assert metrics["gr"] == pytest.approx(2 / 4)
    assert 0.0 < metrics["map"] < 1.0


@pytest.mark.parametrize("task", [REC, OVD], ids=["rec", "ovd"])
def test_the_vlmr1_profile_keeps_the_task_contract(task, tmp_path):
    report = check_task_contract(task, tmp_path)
    assert report.skipped == {}


# ---- properties: any text, never raises, always in [0, 1] ----------------------------------

_items = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                          ["bbox_2d", "label", "x"]), inner, max_size=3), max_leaves=12)
_labels = st.sampled_from(["cat", "dog", "Cat", "bird"])
_box = st.lists(st.one_of(st.integers(-50, 150), st.floats(allow_nan=True, allow_infinity=True)), min_size=0,
                max_size=6)
_detection = st.fixed_dictionaries({"bbox_2d": _box, "label": _labels})


@pytest.mark.filterwarnings("error")
@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/answer[]0123456789, .-\n")), max_size=80),
       st.sampled_from([None, ImageTransform.resize(100, 80, 50, 40), ImageTransform(0.0, 1.0, 0, 0, 0, 80)]))
def test_rec_never_raises_and_stays_in_range(text, frame):
    value = REC.accuracy(REC.parse_answer(REC.answer_text(parse_response(text, "plain"))), rec_sample(), frame=frame)
    assert 0.0 <= value <= 1.0


@pytest.mark.filterwarnings("error")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_detection, _items), max_size=5), st.booleans(), st.booleans())
def test_ovd_never_raises_and_stays_in_range(items, empty_gt, two_blocks):
    try:
        body = json.dumps(items)
    except ValueError:
        body = "[]"
    text = ovd_text("x", fence(json.loads(body))) if two_blocks else ovd_text(f"```json\n{body}\n```")
    sample = ovd_sample([] if empty_gt else GT)
    prediction = OVD.parse_answer(OVD.answer_text(parse_response(text, "plain")))
    value = OVD.accuracy(prediction, sample, frame=ImageTransform.resize(100, 80, 200, 160))
    assert 0.0 <= value <= 1.0
    metrics = OVD.evaluate([OVD.parse_answer(OVD.answer_text(parse_response(text, "plain")))], [sample])
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


# ---- randomised agreement with VLM-R1's rules run on pycocotools ------------------------------


def _vlmr1_by_its_rules(content: str, gts: list[dict]) -> float:
    """VLM-R1's OVD-with-length reward restated from its rules (regexes, json.loads, pycocotools), as a
    reference independent of syngrpo's parsing and AP code."""
    import re


    blocks = re.findall(r"<answer>(.*?)</answer>", content, re.DOTALL)
    if not blocks:
        return 0.0
    fences = re.findall(r"```json(.*?)```", blocks[-1].strip(), re.DOTALL)
    preds: list = []
    if fences:
        try:
            preds = [item for item in json.loads(fences[-1].strip())]
        except Exception:  # noqa: BLE001 - VLM-R1 catches everything here
            preds = []
    if not preds and not gts:
        return 1.0
    if not preds or not gts:
        return 0.0
    cats: dict[str, int] = {}
    anns = []
    for i, g in enumerate(gts):
        cats.setdefault(g["label"], len(cats))
        x1, y1, x2, y2 = g["bbox_2d"]
        anns.append({"id": i + 1, "image_id": 0, "category_id": cats[g["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    dets = []
    for p in preds:
        try:
            b = p["bbox_2d"]
            dets.append({"image_id": 0, "category_id": cats[p["label"]], "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": 1.0})
        except Exception:  # noqa: BLE001 - VLM-R1 drops any item it cannot read
            pass
    if not dets:
        return 0.0
    ap = pycocotools_ap(anns, dets, cats, image_id=0)
    length = 1.0 if len(gts) >= len(preds) else len(gts) / len(preds)
    return ap * length


def _random_case(rng):
    import random as _random

    assert isinstance(rng, _random.Random)
    labels = ["cat", "dog", "Cat", "traffic light"]
    gts = []
    for _ in range(rng.randint(0, 4)):
        x, y = rng.randint(0, 150), rng.randint(0, 150)
        gts.append({"bbox_2d": [float(x), float(y), float(x + rng.randint(5, 50)), float(y + rng.randint(5, 50))],
                    "label": rng.choice(labels)})
    preds: list = []
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        if gts and roll < 0.6:  # near a ground truth, maybe with a case-changed or wrong label
            g = rng.choice(gts)
            box = [v + rng.uniform(-6, 6) for v in g["bbox_2d"]]
            label = g["label"] if rng.random() < 0.7 else rng.choice(labels + ["bird", g["label"].upper()])
            preds.append({"bbox_2d": [round(v, rng.choice([0, 1, 3])) for v in box], "label": label})
        elif roll < 0.8:  # anywhere, possibly past the image's edge
            x, y = rng.uniform(-20, 220), rng.uniform(-20, 220)
            preds.append({"bbox_2d": [x, y, x + rng.uniform(1, 60), y + rng.uniform(1, 60)], "label": rng.choice(labels)})
        else:  # malformed items VLM-R1 drops but counts
            preds.append(rng.choice([{"label": "cat"}, {"bbox_2d": [1, 2, 3], "label": "cat"}, "cat", 3,
                                     {"bbox_2d": ["1", 2, 3, 4], "label": "cat"}]))
    body = "```json\n" + json.dumps(preds) + "\n```"
    style = rng.randrange(4)
    if style == 0:
        text = f"<think>x</think><answer>{body}</answer>"
    elif style == 1:  # an earlier block, and an earlier fence in the last block, that must be ignored
        text = f'<answer>```json\n[{{"bbox_2d": [0, 0, 9, 9], "label": "cat"}}]\n```</answer><answer>```json\n[]\n``` {body}</answer>'
    elif style == 2:  # no fence
        text = f"<answer>{json.dumps(preds)}</answer>"
    else:  # "None"
        text = "<answer>None</answer>"
    return text, gts


def test_the_ovd_reward_agrees_with_vlmr1s_rules_on_pycocotools_for_random_answers():
    import random

    pytest.importorskip("pycocotools")
    rng = random.Random(0)
    checked = 0
    for _ in range(300):
        text, gts = _random_case(rng)
        sample = ovd_sample(gts)
        ours = OVD.accuracy(OVD.parse_answer(OVD.answer_text(parse_response(text, "plain"))), sample)
        want = max(0.0, _vlmr1_by_its_rules(text, gts))  # pycocotools' -1 ("undefined") is never a reward here
        assert ours == pytest.approx(want, abs=1e-12), text
        checked += want not in (0.0, 1.0)
    assert checked > 50  # most cases land strictly between 0 and 1, not on the edge cases


def _rec_by_vlmr1_rules(content: str, gt: list[float], input_wh: tuple[int, int], image_wh: tuple[int, int]) -> float:
    """VLM-R1's REC IoU reward restated from its rules: first block, integer pattern, grid rescale, -1/+1 IoU."""
    import re

    block = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
    if not block:
        return 0.0
    m = re.search(r"\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)]", block.group(1).strip())
    if not m:
        return 0.0
    (iw, ih), (w, h) = input_wh, image_wh
    b = [int(m.group(1)) / iw * w, int(m.group(2)) / ih * h, int(m.group(3)) / iw * w, int(m.group(4)) / ih * h]
    ix1, iy1 = max(b[0], gt[0]), max(b[1], gt[1])
    ix2, iy2 = min(b[2] - 1, gt[2] - 1), min(b[3] - 1, gt[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (b[2] - b[0]) * (b[3] - b[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
    try:
        return max(0.0, float(inter) / union)
    except ZeroDivisionError:
        return 0.0


def test_the_rec_reward_agrees_with_vlmr1s_rules_for_random_answers_and_grids():
    import random

    rng = random.Random(1)
    strictly_between = 0
    for _ in range(400):
        w, h = rng.randint(60, 700), rng.randint(60, 700)
        iw, ih = 14 * rng.randint(4, 40), 14 * rng.randint(4, 40)  # the processor's grid x 14
        x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
        gt = [x, y, min(w, x + rng.uniform(2, w / 2)), min(h, y + rng.uniform(2, h / 2))]
        sx, sy = iw / w, ih / h
        near = [round(gt[0] * sx + rng.uniform(-15, 15)), round(gt[1] * sy + rng.uniform(-15, 15)),
                round(gt[2] * sx + rng.uniform(-15, 15)), round(gt[3] * sy + rng.uniform(-15, 15))]
        box = ", ".join(str(abs(v)) for v in near) if rng.random() < 0.8 else ",".join(str(abs(v)) for v in near[::-1])
        text = rng.choice([f"<think>a</think><answer>[{box}]</answer>", f"<answer>[{box}]</answer><answer>[0, 0, 1, 1]</answer>",
                           f"<answer>{{\"bbox_2d\": [{box}]}}</answer>", f"[{box}]", f"<answer>[{box}.5]</answer>"])
        sample = Sample(id="r", task="rec", image="/x.png", problem="x", solution=gt, width=w, height=h)
        frame = ImageTransform.resize(w, h, iw, ih)
        ours = reward(REC, text, sample, frame)
        want = _rec_by_vlmr1_rules(text, gt, (iw, ih), (w, h))
        assert ours == pytest.approx(want, abs=1e-9), (text, gt, (iw, ih), (w, h))
        strictly_between += 0.0 < want < 1.0
    assert strictly_between > 100
