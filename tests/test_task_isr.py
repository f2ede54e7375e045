"""ISR task: parser, OVD reward, matched-pair scores, rotations under transforms, toy rooms, files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from syngrpo.perception.geometry import ImageTransform
from syngrpo.plugins import get_registry
from syngrpo.types import Sample
from tasks_isr.metrics import matched_pair_scores, rotation_score
from tasks_isr.rotation import angular_error, facing_vector, normalize_rotation, rotation_of, transform_rotation
from tasks_isr.task import IsrTask, parse_objects
from tasks_isr.toy import FURNITURE


def obj(box, label, rotation=None):
    return {"bbox_2d": list(box), "label": label, "rotation": rotation}


def sample_with(objects, w=100, h=100) -> Sample:
    return Sample(id="s", task="isr", image="/nonexistent.png", problem="q", solution=objects, width=w, height=h)


@pytest.fixture
def task() -> IsrTask:
    return IsrTask()


# ---- rotations ---------------------------------------------------------------------------


def test_rotations_fold_into_zero_to_360():
    assert normalize_rotation(-90) == 270.0
    assert normalize_rotation(720) == 0.0
    assert normalize_rotation(-0.0) == 0.0 and math.copysign(1, normalize_rotation(-0.0)) == 1
    assert normalize_rotation(359.5) == 359.5


def test_facing_convention_is_clockwise_from_facing_down():
    # 0 faces the bottom of the image (+y), 90 faces left, 180 up, 270 right (y points down)
    for degrees, expected in [(0, (0, 1)), (90, (-1, 0)), (180, (0, -1)), (270, (1, 0))]:
        fx, fy = facing_vector(degrees)
        assert (round(fx, 12), round(fy, 12)) == expected
        assert rotation_of(fx, fy) == pytest.approx(degrees)


def test_angular_error_wraps_around_360():
    assert angular_error(350, 10) == pytest.approx(20)
    assert angular_error(0, 180) == pytest.approx(180)
    assert angular_error(90, 90) == 0
    assert angular_error(10, 370) == pytest.approx(0)


def test_angular_error_of_a_two_fold_symmetric_object_ignores_half_turns():
    assert angular_error(0, 180, symmetry=2) == pytest.approx(0)
    assert angular_error(10, 200, symmetry=2) == pytest.approx(10)
    assert angular_error(0, 90, symmetry=2) == pytest.approx(90)
    assert angular_error(0, 90, symmetry=4) == pytest.approx(0)


def test_uniform_scale_and_translation_keep_the_rotation_exactly():
    t = ImageTransform.resize(100, 100, 250, 250).then(ImageTransform.pad(250, 250, 7, 3, 0, 0))
    assert transform_rotation(37.25, t) == 37.25
    assert transform_rotation(None, t) is None


def test_mirrors_flip_the_rotation():
    horizontal = ImageTransform(sx=-1.0, tx=100.0)
    vertical = ImageTransform(sy=-1.0, ty=100.0)
    assert transform_rotation(90, horizontal) == pytest.approx(270)  # faced left, now faces right
    assert transform_rotation(30, horizontal) == pytest.approx(330)
    assert transform_rotation(0, vertical) == pytest.approx(180)  # faced down, now faces up
    assert transform_rotation(30, vertical) == pytest.approx(150)


def test_non_uniform_resize_keeps_right_angles_and_skews_others():
    stretch = ImageTransform.resize(100, 100, 200, 100)  # x doubled
    for degrees in (0, 90, 180, 270):
        assert transform_rotation(degrees, stretch) == degrees
    # facing (-sin 45, cos 45) becomes (-2, 1)/norm: rotation atan2(2, 1)
    assert transform_rotation(45, stretch) == pytest.approx(math.degrees(math.atan2(2, 1)))


# ---- matched-pair scores (perception side) by hand -----------------------------------------------------------


def test_rotation_score_is_one_minus_error_over_180():
    assert rotation_score(350, 10) == pytest.approx(1 - 20 / 180)
    assert rotation_score(270, 90) == 0.0
    assert rotation_score(None, 90) == 0.0
    assert rotation_score(180, 0, symmetry=2) == 1.0


def test_matched_pair_scores_by_hand():
    gts = [
        [obj([0, 0, 10, 10], "bed", 0), obj([20, 20, 30, 30], "chair", 90)],
        [obj([0, 0, 10, 10], "sofa", 180)],
    ]
    preds = [
        [
            obj([0, 0, 10, 8], "bed", 350),  # IoU 0.8, rotation error 10 -> 17/18
            obj([20, 20, 30, 30], "chair", 270),  # IoU 1.0, rotation error 180 -> 0
            obj([20, 20, 30, 30], "sofa", 90),  # right place, wrong label: not a pair
        ],
        [obj([0, 0, 4, 10], "sofa", 180)],  # IoU 0.4 < 0.5: not a pair
    ]
    got = matched_pair_scores(gts, preds)
    assert got["n_pairs"] == 2
    assert got["matched_iou"] == pytest.approx((0.8 + 1.0) / 2)
    assert got["matched_rotation"] == pytest.approx((17 / 18 + 0.0) / 2)


def test_matched_pair_scores_skip_labels_without_rotation_and_honour_symmetry():
    gts = [[obj([0, 0, 10, 10], "table", 0), obj([20, 20, 30, 30], "plant", None)]]
    preds = [[obj([0, 0, 10, 10], "table", 180), obj([20, 20, 30, 30], "plant", 45)]]
    strict = matched_pair_scores(gts, preds)
    assert strict["matched_iou"] == 1.0 and strict["n_pairs"] == 2
    assert strict["matched_rotation"] == 0.0  # only the table counts, and it is 180 off
    assert matched_pair_scores(gts, preds, symmetry={"Table": 2})["matched_rotation"] == 1.0


def test_matched_pair_scores_without_pairs_are_zero_unless_nothing_was_there():
    assert matched_pair_scores([[obj([0, 0, 10, 10], "bed", 0)]], [[]]) == {"matched_iou": 0.0, "matched_rotation": 0.0,
                                                                           "n_pairs": 0.0}
    assert matched_pair_scores([[]], [[]])["matched_iou"] == 1.0


def test_evaluate_by_hand(task):
    s1 = sample_with([obj([0, 0, 10, 10], "bed", 0), obj([20, 20, 30, 30], "chair", 90)])
    s2 = sample_with([obj([50, 50, 70, 70], "sofa", 180)])
    preds = [
        [obj([0, 0, 10, 8], "bed", 350), obj([20, 20, 30, 30], "chair", 270), obj([60, 0, 70, 10], "desk", 0)],
        None,  # unreadable: no objects
    ]
    got = task.evaluate(preds, [s1, s2])
    assert set(got) == {"map", "gp", "gr", "matched_iou", "matched_rotation"}
    assert got["gp"] == pytest.approx(2 / 3)
    assert got["gr"] == pytest.approx(2 / 3)
    assert got["matched_iou"] == pytest.approx(0.9)
    assert got["matched_rotation"] == pytest.approx(17 / 36)
    assert 0.0 < got["map"] < 1.0


def test_evaluate_maps_predictions_back_from_the_model_frame(task):
    s = sample_with([obj([10, 10, 30, 50], "bed", 45)])
    frame = ImageTransform.resize(100, 100, 200, 100)  # the model saw a 2x wider image
    seen = task.transform_solution(s.solution, frame)
    assert seen[0]["bbox_2d"] == [20, 10, 60, 50]
    assert seen[0]["rotation"] != 45  # skewed by the stretch
    got = task.evaluate([seen], [s], frames=[frame])
    assert got == pytest.approx({"map": 1.0, "gp": 1.0, "gr": 1.0, "matched_iou": 1.0, "matched_rotation": 1.0})
    assert task.evaluate([seen], [s])["gp"] == 0.0  # without the frame the box is in the wrong place


# ---- reward --------------------------------------------------------------------------------


def test_reward_is_one_for_the_labels_and_ignores_rotation(task):
    s = sample_with([obj([0, 0, 10, 10], "bed", 0), obj([20, 20, 30, 30], "chair", 90)])
    # COCO's precision tp / (tp + fp + eps) makes a perfect AP 1 - 2e-16, hence approx
    assert task.accuracy(task.parse_answer(task.format_answer(s.solution)), s) == pytest.approx(1.0)
    turned = [{**o, "rotation": (o["rotation"] + 180) % 360} for o in s.solution]
    assert task.accuracy(turned, s) == pytest.approx(1.0)


def test_reward_penalises_redundant_predictions_by_n_gt_over_n_pred(task):
    s = sample_with([obj([0, 0, 10, 10], "bed", 0)])
    answer = [obj([0, 0, 10, 10], "bed", 0), obj([50, 50, 60, 60], "bed", 0)]
    # mAP = 1 (the extra box comes after the hit), scale = min(1, 1/2)
    assert task.accuracy(answer, s) == pytest.approx(0.5)


def test_reward_of_an_unreadable_answer_is_zero(task):
    s = sample_with([obj([0, 0, 10, 10], "bed", 0)])
    assert task.accuracy(None, s) == 0.0
    assert task.accuracy(task.parse_answer("I see a bed"), s) == 0.0


def test_reward_never_raises_on_raw_lists_or_a_degenerate_frame(task):
    s = sample_with([obj([0, 0, 10, 10], "bed", 0)])
    assert task.accuracy([{"bbox_2d": "x"}, 3, None], s) == 0.0  # not from parse_answer, still safe
    assert task.accuracy([obj([0, 0, 10, 10], "bed")], s, frame=ImageTransform(sx=0.0)) == 0.0
    empty_room = sample_with([])
    assert task.accuracy([], empty_room) == 1.0
    assert task.accuracy([{"bbox_2d": "x"}], empty_room) == 0.0  # junk is not "nothing there"


def test_reward_maps_the_answer_back_through_the_frame(task):
    s = sample_with([obj([10, 10, 30, 50], "bed", 0)])
    frame = ImageTransform.resize(100, 100, 50, 50)
    seen = task.format_answer(task.transform_solution(s.solution, frame))
    assert task.accuracy(task.parse_answer(seen), s, frame=frame) == pytest.approx(1.0)
    assert task.accuracy(task.parse_answer(seen), s) < 0.2


def test_reward_equals_the_ovd_reward_for_boxes_reaching_outside_the_image(task):
    # R^isr_acc = R^ovd_acc (paper): a box outside the image is clipped like OVD's, and one
    # mapped entirely outside the image still counts as a prediction (N_pred of eq. 3).
    from tasks_ovd.task import OvdTask

    ovd = OvdTask()
    s = sample_with([obj([90, 90, 100, 100], "bed", 0)])
    overhanging = [obj([90, 90, 130, 130], "bed", 0)]  # clipped to the label's box exactly
    assert task.accuracy(overhanging, s) == pytest.approx(ovd.accuracy(overhanging, s)) == pytest.approx(1.0)
    frame = ImageTransform.resize(100, 100, 50, 50)
    seen = [obj([45, 45, 50, 50], "bed", 0), obj([60, 60, 70, 70], "bed", 0)]  # the second lies off the image
    expected = ovd.accuracy(seen, s, frame=frame)
    assert expected < 1.0
    assert task.accuracy(seen, s, frame=frame) == pytest.approx(expected)


# ---- parser --------------------------------------------------------------------------------


def test_parser_reads_fenced_prose_wrapped_and_single_object_answers():
    text = 'Here you go:\n```json\n[{"bbox_2d": [1, 2, 3, 4], "label": " Bed ", "rotation": -90}]\n```'
    assert parse_objects(text) == [{"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "bed", "rotation": 270.0}]
    assert parse_objects('{"bbox_2d": [1, 2, 3, 4], "label": "sofa"}') == [
        {"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "sofa", "rotation": None}
    ]
    assert parse_objects("[]") == []


def test_parser_drops_unusable_objects_and_reads_rotations_leniently():
    text = json.dumps([
        {"bbox_2d": [1, 2, 3, 4], "label": "bed", "rotation": "north"},
        {"bbox_2d": [3, 4, 1, 2], "label": "sofa", "rotation": "90"},  # corners swapped, rotation a string
        {"bbox_2d": [1, 2, 3], "label": "bed"},
        {"bbox_2d": [True, 2, 3, 4], "label": "bed"},
        {"bbox_2d": [1, 2, 3, 4], "label": ""},
        {"bbox_2d": [1, 2, 3, 4]},
        "bed",
    ])
    assert parse_objects(text) == [
        {"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "bed", "rotation": None},
        {"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "sofa", "rotation": 90.0},
    ]


def test_a_list_without_any_usable_object_is_unreadable_not_empty():
    # otherwise a REC-style box would score 1.0 on a room without furniture
    assert parse_objects("[1, 2, 3, 4]") is None
    assert parse_objects('[{"label": "bed"}]') is None
    assert parse_objects("<answer>[]</answer>") == []


@pytest.mark.parametrize("text", [None, "", "bed", "[", "{}", '{"label": "bed"}', "3", "null", "[" * 3000])
def test_parser_returns_none_for_answers_without_a_list(text):
    assert parse_objects(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises_on_any_text(text):
    got = parse_objects(text)
    assert got is None or all(o["bbox_2d"][0] <= o["bbox_2d"][2] for o in got)


_number = st.one_of(st.integers(-50, 150), st.floats(allow_nan=True, allow_infinity=True, width=32))
_json_object = st.fixed_dictionaries(
    {"bbox_2d": st.lists(_number, min_size=3, max_size=5), "label": st.sampled_from(["bed", "sofa", "Bed", 3, ""])},
    optional={"rotation": st.one_of(_number, st.text(max_size=3), st.none())},
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_json_object, max_size=6))
def test_reward_stays_in_unit_interval_for_any_object_list(objects):
    task = IsrTask()
    s = sample_with([obj([0, 0, 10, 10], "bed", 0), obj([20, 20, 60, 40], "sofa", 90)])
    text = json.dumps(objects)  # NaN / Infinity appear as JSON extensions, as a model might write them
    parsed = task.parse_answer(text)
    assert parsed is None or all(len(o["bbox_2d"]) == 4 for o in parsed)
    value = task.accuracy(parsed, s)
    assert 0.0 <= value <= 1.0
    metrics = task.evaluate([parsed], [s])
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


# ---- transform_solution ----------------------------------------------------------------------


def test_transform_moves_boxes_and_keeps_rotation_under_uniform_scale_and_pad(task):
    objects = [obj([10, 20, 30, 40], "bed", 90), obj([50, 50, 60, 70], "chair", 33.5)]
    t = ImageTransform.resize(100, 100, 50, 50).then(ImageTransform.pad(50, 50, 5, 0, 5, 0))
    got = task.transform_solution(objects, t)
    assert got == [obj([10, 10, 20, 20], "bed", 90), obj([30, 25, 35, 35], "chair", 33.5)]


def test_crop_clips_boxes_and_drops_objects_cropped_away(task):
    objects = [obj([10, 10, 30, 30], "bed", 0), obj([70, 70, 90, 90], "sofa", 90)]
    got = task.transform_solution(objects, ImageTransform.crop(20, 20, 60, 60))
    assert got == [obj([0, 0, 10, 10], "bed", 0)]


def test_identity_transform_is_the_identity(task):
    objects = [obj([10.25, 20, 30, 40], "bed", 359.9), {"bbox_2d": [1, 2, 3, 4], "label": "x"}]
    assert task.transform_solution(objects, ImageTransform.identity(100, 100)) == objects


# ---- toy rooms ---------------------------------------------------------------------------------


def _painted(pixels: np.ndarray, colours) -> np.ndarray:
    return np.any([np.all(pixels == np.array(c), axis=-1) for c in colours], axis=0)


@pytest.mark.parametrize("rotation", ["right", "any"])
def test_toy_labels_match_the_pixels(tmp_path, task, rotation):
    samples = task.make_toy_dataset(tmp_path, n=6, seed=11, rotation=rotation, image_size=128)
    for s in samples:
        pixels = np.array(Image.open(s.image).convert("RGB"))
        assert pixels.shape == (s.height, s.width, 3)
        assert 1 <= len(s.solution)
        for o in s.solution:
            body = FURNITURE[o["label"]][1]
            band = tuple(int(v * 0.55) for v in body)
            x1, y1, x2, y2 = o["bbox_2d"]
            # a window one pixel wider than the box (neighbours keep a 2 px gap, so none reaches into it)
            i0, j0 = math.floor(x1) - 1, math.floor(y1) - 1
            i1, j1 = math.ceil(x2) + 1, math.ceil(y2) + 1
            window = pixels[max(0, j0):j1, max(0, i0):i1]
            mask = _painted(window, [body, band])
            rows, cols = np.nonzero(mask)
            assert len(rows), f"{o} painted nothing"
            px = (cols.min() + max(0, i0), rows.min() + max(0, j0), cols.max() + 1 + max(0, i0),
                  rows.max() + 1 + max(0, j0))
            tol = 1e-6 if o["rotation"] % 90 == 0 else 1.0  # right angles fill their box exactly
            assert all(abs(a - b) <= tol for a, b in zip(px, o["bbox_2d"], strict=True)), (o, px)
            # the dark back band lies behind the centre, opposite to the facing direction
            b_rows, b_cols = np.nonzero(_painted(window, [band]))
            fx, fy = facing_vector(o["rotation"])
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            bx, by = b_cols.mean() + max(0, i0) + 0.5, b_rows.mean() + max(0, j0) + 0.5
            along = (bx - cx) * fx + (by - cy) * fy
            assert along < 0, (o, along)


def test_toy_objects_do_not_overlap_and_stay_on_the_floor(tmp_path, task):
    for s in task.make_toy_dataset(tmp_path, n=10, seed=5, rotation="any"):
        fx1, fy1, fx2, fy2 = s.meta["floor_box"]
        boxes = [o["bbox_2d"] for o in s.solution]
        for k, a in enumerate(boxes):
            assert fx1 <= a[0] and fy1 <= a[1] and a[2] <= fx2 and a[3] <= fy2
            for b in boxes[k + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_toy_rotation_modes(tmp_path, task):
    right = task.make_toy_dataset(tmp_path / "r", n=8, seed=2, rotation="right")
    assert {o["rotation"] for s in right for o in s.solution} <= {0.0, 90.0, 180.0, 270.0}
    anyr = task.make_toy_dataset(tmp_path / "a", n=8, seed=2, rotation="any")
    assert any(o["rotation"] % 90 for s in anyr for o in s.solution)
    with pytest.raises(ValueError, match="rotation must be one of"):
        task.make_toy_dataset(tmp_path / "x", n=1, seed=0, rotation="diagonal")


def test_toy_is_deterministic_per_seed_and_split(tmp_path, task):
    a = task.make_toy_dataset(tmp_path / "a", n=3, seed=4)
    b = task.make_toy_dataset(tmp_path / "b", n=3, seed=4)
    c = task.make_toy_dataset(tmp_path / "c", n=3, seed=4, split="test")
    assert [s.solution for s in a] == [s.solution for s in b]
    assert Image.open(a[0].image).tobytes() == Image.open(b[0].image).tobytes()
    assert [s.solution for s in a] != [s.solution for s in c]


# ---- files ---------------------------------------------------------------------------------------


def test_toy_dataset_round_trips_through_its_jsonl(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path, n=3, seed=1)
    loaded = task.load(tmp_path / "train.jsonl")
    assert [s.to_dict() for s in loaded] == [s.to_dict() for s in samples]
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert first["image"] == "images/isr_train_00000.png"  # relative: the folder can move


def test_loader_reads_a_json_list_with_solution_alias_extra_fields_and_no_size(tmp_path, task):
    Image.new("RGB", (40, 30)).save(tmp_path / "room.png")
    records = [{"image": "room.png", "solution": [obj([1, 2, 3, 4], "bed", 90)], "scene_id": "3dfront-17"}]
    (tmp_path / "val.json").write_text(json.dumps(records))
    (s,) = task.load(tmp_path / "val.json")
    assert (s.id, s.width, s.height) == ("val-0", 40, 30)
    assert s.image == os.path.abspath(tmp_path / "room.png")
    assert s.meta == {"scene_id": "3dfront-17"}
    assert s.solution == [obj([1, 2, 3, 4], "bed", 90)]
    assert "rotation" in s.problem  # the question was filled in
    task.save([s], tmp_path / "out" / "copy.json")
    (again,) = task.load(tmp_path / "out" / "copy.json")
    assert again.to_dict() == s.to_dict()


def test_loader_rejects_a_record_with_a_bad_object(tmp_path, task):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png", "width": 1, "height": 1,
                                                    "objects": [{"bbox_2d": [3, 3, 1, 1], "label": "bed"}]}))
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: object 1 .* needs a bbox_2d of four finite numbers"):
        task.load(tmp_path / "bad.jsonl")


# ---- options and registration ----------------------------------------------------------------------


def test_drop_unknown_labels_option_forgives_hallucinated_classes():
    s = sample_with([obj([0, 0, 10, 10], "bed", 0)])
    answer = [obj([0, 0, 10, 10], "bed", 0), obj([90, 90, 99, 99], "piano", 0)]
    strict, lenient = IsrTask(), IsrTask(drop_unknown_labels=True)
    assert lenient.accuracy(answer, s) > strict.accuracy(answer, s)


def test_rotation_symmetry_option_rejects_orders_below_one():
    with pytest.raises(ValueError, match="positive"):
        IsrTask(rotation_symmetry={"table": 0})


def test_isr_is_registered_through_the_entry_point_and_lists_its_classes():
    registry = get_registry(refresh=True)
    entry = registry.get("tasks", "isr")
    assert entry.distribution == "syngrpo"
    task = registry.create("tasks", "isr", classes=["Bed", "Sofa"])
    assert isinstance(task, IsrTask)
    assert task.class_names() == ["bed", "sofa"]
    assert "bed, sofa" in task.question(sample_with([]).evolve(problem=""))
