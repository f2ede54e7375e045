"""The REC task: answers read in every harmless variant, IoU in the right frame, files, toy data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from syngrpo.perception.geometry import ImageTransform, iou
from syngrpo.perception.toyshapes import COLOURS
from syngrpo.plugins import get_registry
from syngrpo.types import Sample
from tasks_rec.task import RecTask, parse_box


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask()


def _sample(box=(10.0, 20.0, 50.0, 60.0), width=100, height=80) -> Sample:
    return Sample(id="s", task="rec", image="/nonexistent.png", problem="the red circle",
                  solution=list(box), width=width, height=height)


# ---- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "[10, 20, 50, 60]",
    "[10.0, 20.0, 50.0, 60.0]",
    "[10,20,50,60]",
    "(10, 20, 50, 60)",
    "10, 20, 50, 60",
    '{"bbox_2d": [10, 20, 50, 60]}',
    '[{"bbox_2d": [10, 20, 50, 60], "label": "the red circle"}]',
    '```json\n{"bbox_2d": [10, 20, 50, 60]}\n```',
    "<answer>[10, 20, 50, 60]</answer>",
    "<answer>```json\n[10, 20, 50, 60]\n```</answer>",
    "The red circle is at [10, 20, 50, 60].",
    '{"bbox_2d": ["10", "20", "50", "60"]}',
    "[50, 60, 10, 20]",  # corners in the other order
    "```json\n[10, 20, 50, 60]",  # fence never closed (generation cut short)
])
def test_every_harmless_answer_variant_reads_as_the_same_box(task, text):
    assert task.parse_answer(text) == (10.0, 20.0, 50.0, 60.0)


def test_floats_keep_their_decimals():
    assert parse_box("[1.5, 2.25, 3e1, 4.0]") == (1.5, 2.25, 30.0, 4.0)


def test_the_first_box_found_is_the_answer():
    assert parse_box("[1, 2, 3, 4] or maybe [5, 6, 7, 8]") == (1.0, 2.0, 3.0, 4.0)
    assert parse_box('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]') == (1.0, 2.0, 3.0, 4.0)


def test_a_bracketed_box_wins_over_loose_numbers():
    assert parse_box("step 1, 2, 3, 4 gives [10, 20, 30, 40]") == (10.0, 20.0, 30.0, 40.0)


@pytest.mark.parametrize("text", [
    None, "", "no box here", "[1, 2, 3]", "[1, 2, 3, 4, 5]x", '{"bbox_2d": "box"}', "[NaN, 1, 2, 3]",
    "[1e999, 0, 1, 2]", "[true, false, true, false]", '["a", "b", "c", "d"]', "[" * 3000, "9" * 5000,
])
def test_answers_without_a_box_are_unreadable(task, text):
    assert task.parse_answer(text) is None


@pytest.mark.parametrize("text", ["<answer>" * 3000, "</answer>" * 3000, "1," * 10000, "{a" * 10000,
                                  "```json\n" * 3000, "[" * 20000, "9" * 20000])
def test_pathological_answers_parse_in_linear_time(task, text):
    # how the time grows, not how long it takes (a wall-clock bound failed under a loaded CI machine): four
    # times the text costs ~4x for a linear scan and ~16x for a quadratic one (which took 0.3 s on the first)
    assert _growth(task.parse_answer, text) < 8.0


def _growth(parse, text: str, times: int = 4, repeats: int = 3) -> float:
    """Best-of-``repeats`` time of ``parse(text * times)`` over that of ``parse(text)`` (+ 2 ms of slack)."""
    import time

    def best(t: str) -> float:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            parse(t)
            out.append(time.perf_counter() - start)
        return min(out)

    return best(text * times) / (best(text) + 0.002)


def test_the_growth_measure_tells_a_quadratic_scan_from_a_linear_one():
    def quadratic(t: str) -> int:
        return sum(t[:i].count(",") for i in range(0, len(t), 4))  # ~n^2/8 characters read

    assert _growth(len, "1," * 10000) < 8.0
    assert _growth(quadratic, "1," * 10000) > 8.0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_answer_never_raises_and_its_accuracy_stays_in_range(text):
    t = RecTask()
    parsed = t.parse_answer(text)
    assert parsed is None or (len(parsed) == 4 and parsed[0] <= parsed[2] and parsed[1] <= parsed[3])
    assert 0.0 <= t.accuracy(parsed, _sample()) <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True)),
                min_size=4, max_size=4))
def test_accuracy_of_any_four_numbers_is_a_finite_value_in_range(values):
    v = RecTask().accuracy(parse_box(json.dumps(values)), _sample())
    assert 0.0 <= v <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.from_type(object))
def test_accuracy_of_any_object_is_zero_or_more_and_never_raises(prediction):
    assert 0.0 <= RecTask().accuracy(prediction, _sample()) <= 1.0


# ---- accuracy in the right frame ---------------------------------------------------------


def test_a_box_predicted_on_the_resized_image_scores_one_after_mapping_back(task):
    s = _sample(width=100, height=80)
    to_model = ImageTransform.resize(100, 80, 448, 252)
    predicted = task.parse_answer(task.format_answer(to_model.box(s.solution)))
    assert task.accuracy(predicted, s, frame=to_model) == pytest.approx(1.0)
    assert task.accuracy(predicted, s) < 0.5  # read in the wrong frame it misses


def test_the_reward_is_the_iou_of_eq_2(task):
    s = _sample(box=(0, 0, 10, 10), width=100, height=100)
    assert task.accuracy((5, 0, 15, 10), s) == pytest.approx(1 / 3)


def test_a_box_reaching_past_the_image_is_clipped_to_it(task):
    s = _sample(box=(0.0, 0.0, 50.0, 80.0), width=100, height=80)
    assert task.accuracy((-30, -30, 50, 200), s) == pytest.approx(1.0)


def test_unreadable_predictions_score_zero(task):
    assert task.accuracy(None, _sample()) == 0.0
    assert task.accuracy("[1, 2, 3, 4]", _sample()) == 0.0  # text, not a parsed box


def test_acc_at_half_counts_iou_strictly_above_one_half(task):
    s = _sample(box=(0, 0, 10, 10), width=100, height=100)
    preds = [(0, 0, 10, 10), (0, 0, 10, 5), (0, 0, 10, 6), None]  # IoU 1, 0.5, 0.6, 0
    metrics = task.evaluate(preds, [s] * 4)
    assert metrics["acc@0.5"] == pytest.approx(2 / 4)
    assert metrics["mean_iou"] == pytest.approx((1 + 0.5 + 0.6 + 0) / 4)


def test_evaluate_maps_each_prediction_through_its_own_frame(task):
    s = _sample(box=(10, 10, 20, 20), width=100, height=100)
    frames = [ImageTransform.resize(100, 100, 200, 200), None]
    metrics = task.evaluate([(20, 20, 40, 40), (10, 10, 20, 20)], [s, s], frames=frames)
    assert metrics == {"acc@0.5": 1.0, "mean_iou": 1.0}
    with pytest.raises(ValueError, match="frames"):
        task.evaluate([None], [s], frames=[])


# ---- files -----------------------------------------------------------------------------


def _png(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 200, 200)).save(path)


def test_vlm_r1_jsonl_variants_load_with_images_relative_to_image_root(tmp_path, task):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png", size=(80, 60))
    records = [
        {"id": 7, "image": "a.png", "problem": "Where is it? Give the box.", "normal_caption": "the cat",
         "solution": [1, 2, 30, 40]},
        {"image": ["b.png"], "conversations": [{"from": "human", "value": "<image>Find the dog."},
                                               {"from": "gpt", "value": "<answer>[4.5, 5, 6, 7.25]</answer>"}]},
        {"image": "a.png", "expression": "the left one", "bbox": "```json\n[3, 3, 9, 9]\n```", "width": 640,
         "height": 480, "dataset": "refcoco"},
    ]
    data = tmp_path / "data" / "rec.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    a, b, c = task.load(data, image_root=tmp_path / "imgs")
    assert (a.id, a.problem, a.solution, a.width, a.height) == ("7", "the cat", [1, 2, 30, 40], 64, 48)
    assert a.image == str((tmp_path / "imgs" / "a.png").resolve())
    assert a.meta["problem"] == "Where is it? Give the box."  # every other field is kept
    assert task.question(a) == "Locate the cat in the image. Output the bounding box as [x1, y1, x2, y2] in pixels."
    assert (b.id, b.problem, b.solution, b.width, b.height) == ("rec-1", "Find the dog.", [4.5, 5, 6, 7.25], 80, 60)
    assert task.question(b).startswith("Find the dog. ")
    assert (c.problem, c.solution, c.width, c.height, c.meta["dataset"]) == ("the left one", [3, 3, 9, 9], 640, 480, "refcoco")


def test_a_json_list_file_loads_with_images_beside_it(tmp_path, task):
    _png(tmp_path / "a.png")
    (tmp_path / "rec.json").write_text(json.dumps([{"image": "a.png", "sentence": "x", "solution": [0, 0, 5, 5]}]))
    (s,) = task.load(tmp_path / "rec.json")
    assert s.image == str((tmp_path / "a.png").resolve()) and s.problem == "x"


def test_raw_refcoco_boxes_in_xywh_are_converted(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "rec.jsonl").write_text(json.dumps({"image": "a.png", "ref": "x", "bbox": [10, 20, 5, 6]}) + "\n")
    (s,) = RecTask(box_format="xywh").load(tmp_path / "rec.jsonl")
    assert s.solution == [10, 20, 15, 26]


def test_bad_records_name_the_file_and_line(tmp_path, task):
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "ref": "x", "solution": [1, 2, 3, 4], "width": 9, "height": 9}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        task.load(tmp_path / "bad.jsonl")
    (tmp_path / "nobox.jsonl").write_text('{"image": "a.png", "ref": "x", "width": 9, "height": 9}\n')
    with pytest.raises(ValueError, match=r"nobox.jsonl line 1: no box; add 'solution'"):
        task.load(tmp_path / "nobox.jsonl")


def test_save_then_load_gives_the_samples_back(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path / "toy", n=4, seed=1)
    samples[0] = samples[0].evolve(source_id="orig", generation=2, description="a beach")
    task.save(samples, tmp_path / "out" / "again.jsonl")
    loaded = task.load(tmp_path / "out" / "again.jsonl")
    assert [s.to_dict() for s in loaded] == [s.to_dict() for s in samples]


def test_saving_to_a_json_path_writes_a_json_list_that_loads_back(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path / "toy", n=2, seed=0)
    task.save(samples, tmp_path / "rec.json")
    assert isinstance(json.loads((tmp_path / "rec.json").read_text()), list)
    assert [s.to_dict() for s in task.load(tmp_path / "rec.json")] == [s.to_dict() for s in samples]


def test_a_whole_question_survives_a_save_and_load(tmp_path, task):
    _png(tmp_path / "a.png")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "a.png", "problem": "Box the cup.", "solution": [1, 1, 2, 2]}) + "\n")
    (s,) = task.load(tmp_path / "q.jsonl")
    task.save([s], tmp_path / "q2.jsonl")
    (again,) = task.load(tmp_path / "q2.jsonl")
    assert task.question(again) == task.question(s) == "Box the cup. Output the bounding box as [x1, y1, x2, y2] in pixels."


# ---- toy data ----------------------------------------------------------------------------


def test_the_toy_generator_is_deterministic_for_a_seed(tmp_path, task):
    a = task.make_toy_dataset(tmp_path / "a", n=5, seed=3)
    b = task.make_toy_dataset(tmp_path / "b", n=5, seed=3)
    c = task.make_toy_dataset(tmp_path / "c", n=5, seed=4)
    assert [(s.problem, s.solution) for s in a] == [(s.problem, s.solution) for s in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(np.asarray(Image.open(x.image)), np.asarray(Image.open(y.image)))
    assert [(s.problem, s.solution) for s in a] != [(s.problem, s.solution) for s in c]


def test_asking_for_more_toy_images_extends_the_split(tmp_path, task):
    short = task.make_toy_dataset(tmp_path / "a", n=3, seed=0)
    long = task.make_toy_dataset(tmp_path / "b", n=6, seed=0)
    assert [s.solution for s in short] == [s.solution for s in long[:3]]


def test_toy_boxes_are_the_exact_boxes_of_the_shapes_pixels(tmp_path, task):
    for s in task.make_toy_dataset(tmp_path, n=12, seed=5, style="ood", split="test"):
        pixels = np.asarray(Image.open(s.image).convert("RGB"))
        for obj in s.meta["objects"]:
            x1, y1, x2, y2 = obj["bbox_2d"]
            mask = np.all(pixels == COLOURS[obj["colour"]], axis=-1)
            inside = mask[y1:y2, x1:x2]
            # tight: the shape's colour reaches all four edges of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            # exact: that colour appears nowhere outside the boxes of shapes of that colour
            for other in s.meta["objects"]:
                if other["colour"] == obj["colour"]:
                    ox1, oy1, ox2, oy2 = other["bbox_2d"]
                    mask[oy1:oy2, ox1:ox2] = False
            assert not mask.any()
        assert s.solution == [float(v) for v in s.meta["objects"][s.meta["target"]]["bbox_2d"]]


def test_every_toy_expression_names_exactly_one_object(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path, n=40, seed=2, relational_prob=0.5)
    relational = 0
    for s in samples:
        objects = s.meta["objects"]
        target = objects[s.meta["target"]]
        words = f"the {target['colour']} {target['shape']}"
        assert s.problem.startswith(words)
        same = [o for o in objects if (o["colour"], o["shape"]) == (target["colour"], target["shape"])]
        if s.problem == words:
            assert len(same) == 1
        else:
            relational += 1
            (twin,) = [o for o in same if o is not target]
            t, o = target["bbox_2d"], twin["bbox_2d"]
            holds = {"on the left": t[2] <= o[0], "on the right": t[0] >= o[2],
                     "at the top": t[3] <= o[1], "at the bottom": t[1] >= o[3]}
            assert holds[s.problem.removeprefix(words + " ")]
    assert relational > 5


def _background_colours(sample):
    pixels = np.asarray(Image.open(sample.image).convert("RGB"))
    outside = np.ones(pixels.shape[:2], dtype=bool)
    for obj in sample.meta["objects"]:
        x1, y1, x2, y2 = obj["bbox_2d"]
        outside[y1:y2, x1:x2] = False
    return {tuple(c) for c in pixels[outside]}


def test_the_ood_style_changes_the_background_and_not_the_labels(tmp_path, task):
    plain = task.make_toy_dataset(tmp_path / "p", n=3, seed=9, split="test")
    ood = task.make_toy_dataset(tmp_path / "o", n=3, seed=9, split="test", style="ood")
    assert [(s.problem, s.solution) for s in plain] == [(s.problem, s.solution) for s in ood]
    for p, o in zip(plain, ood, strict=True):
        assert len(_background_colours(p)) == 1  # a flat tint
        assert len(_background_colours(o)) > 2  # texture and clutter


def test_foreground_keeps_the_twin_a_relation_needs_and_follows_transforms(tmp_path, task):
    s = next(s for s in task.make_toy_dataset(tmp_path, n=30, seed=0, relational_prob=1.0)
             if " on the " in s.problem or " at the " in s.problem)
    assert len(task.foreground_boxes(s)) == len(s.meta["objects"]) >= 2
    up = ImageTransform.resize(s.width, s.height, 2 * s.width, 2 * s.height)
    moved = task.transform_sample(s, up, "/tmp/elsewhere.png")
    assert moved.solution == [2 * v for v in s.solution]
    assert task.foreground_boxes(moved) == [tuple(2.0 * v for v in b) for b in task.foreground_boxes(s)]
    assert (moved.width, moved.height) == (2 * s.width, 2 * s.height)


def test_plain_reference_answers_score_one_on_toy_data(tmp_path, task):
    for s in task.make_toy_dataset(tmp_path, n=5, seed=0):
        assert task.accuracy(task.parse_answer(task.format_answer(s.solution)), s) == 1.0
        assert iou(s.solution, s.solution) == 1.0


# ---- registration ----------------------------------------------------------------------


def test_the_rec_task_is_created_through_its_entry_point():
    registry = get_registry()
    task = registry.create("tasks", "rec", box_format="xyxy")
    assert isinstance(task, RecTask) and task.name == "rec"
    entry = registry.get("tasks", "rec")
    assert (entry.plugin, entry.distribution) == ("rec", "syngrpo")  # the entry point, not a direct import


def test_importing_the_plugin_module_stays_cheap():
    code = ("import sys, tasks_rec.plugin; "
            "print(sorted(m for m in ('tasks_rec.task', 'PIL', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
