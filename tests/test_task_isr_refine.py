"""The ``isr_refine`` task (ISR's refinement stage): S_bbox / S_rotation by hand, ids, files, toy rooms."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from syngrpo.perception.geometry import ImageTransform
from syngrpo.plugins import get_registry
from syngrpo.testing import check_task_contract
from syngrpo.types import Sample
from tasks_isr.refine import IsrRefineTask, parse_layout
from tasks_isr.refine_toy import make_refine_room
from tasks_isr.rotation import angular_error

REFERENCE = [{"id": 0, "label": "bed", "bbox_2d": [0.0, 0.0, 100.0, 100.0], "rotation": 0.0},
             {"id": 1, "label": "chair", "bbox_2d": [100.0, 100.0, 150.0, 150.0], "rotation": 90.0}]
LAYOUT = [{"id": 0, "label": "bed", "bbox_2d": [5.0, 0.0, 105.0, 100.0], "rotation": 20.0},
          {"id": 1, "label": "chair", "bbox_2d": [90.0, 100.0, 140.0, 150.0], "rotation": 75.0}]


def sample(reference=REFERENCE, layout=LAYOUT) -> Sample:
    return Sample(id="r", task="isr_refine", image="/nonexistent.png", problem="",
                  solution={"width": 200, "height": 200, "objects": list(reference)}, width=200, height=200,
                  meta={"layout": list(layout)})


TASK = IsrRefineTask()


def test_the_task_is_registered_and_keeps_the_contract(tmp_path):
    task = get_registry(refresh=True).create("tasks", "isr_refine")
    assert isinstance(task, IsrRefineTask)
    assert check_task_contract(task, tmp_path).skipped == {}


def test_s_bbox_and_s_rotation_by_hand():
    # the bed answered at [0, 0, 500, 400] of 1000 = [0, 0, 100, 80] px: IoU 0.8; rotation 350: error 10 deg
    # the chair is not answered: IoU 0 and rotation score 0
    answer = TASK.parse_answer('[{"id": 0, "bbox_2d": [0, 0, 500, 400], "rotation": 350}]')
    assert TASK.evaluate([answer], [sample()]) == pytest.approx({"s_bbox": 0.4, "s_rotation": (17 / 18) / 2})
    # reward: 0.5 * S_bbox + 0.5 * S_rotation of the image = 0.2 + 17/72
    assert TASK.accuracy(answer, sample()) == pytest.approx(0.2 + 17 / 72)


def test_objects_are_found_by_id_or_else_by_position():
    by_id = '[{"id": 1, "bbox_2d": [500, 500, 750, 750], "rotation": 90}, {"id": 0, "bbox_2d": [0, 0, 500, 500], "rotation": 0}]'
    by_position = '[{"bbox_2d": [0, 0, 500, 500], "rotation": 0}, {"bbox_2d": [500, 500, 750, 750], "rotation": 90}]'
    for text in (by_id, by_position):
        assert TASK.accuracy(TASK.parse_answer(text), sample()) == pytest.approx(1.0)
    # an unknown id answers nothing but counts as an answer: factor min(1, 2 / 3) on the bed's 0.5
    extra = '[{"id": 0, "bbox_2d": [0, 0, 500, 500], "rotation": 0}, {"id": 7, "bbox_2d": [0, 0, 1, 1]}, {"id": 9, "bbox_2d": [0, 0, 1, 1]}]'
    assert TASK.accuracy(TASK.parse_answer(extra), sample()) == pytest.approx(0.5 * 2 / 3)
    # a second answer for the same id: the first one counts
    twice = '[{"id": 0, "bbox_2d": [0, 0, 500, 500], "rotation": 0}, {"id": 0, "bbox_2d": [0, 0, 1, 1], "rotation": 180}]'
    assert TASK.accuracy(TASK.parse_answer(twice), sample()) == pytest.approx(0.5)


def test_copying_the_current_layout_is_the_baseline_not_the_answer():
    copied = [{"id": o["id"], "bbox_2d": [v * 5 for v in o["bbox_2d"]], "rotation": o["rotation"]} for o in LAYOUT]
    got = TASK.evaluate([copied], [sample()])
    # bed: overlap 95 x 100 / (2 * 10000 - 9500) = 9500 / 10500; chair: 40 x 50 / (2 * 2500 - 2000) = 2000 / 3000
    assert got["s_bbox"] == pytest.approx((9500 / 10500 + 2000 / 3000) / 2)
    assert got["s_rotation"] == pytest.approx(((1 - 20 / 180) + (1 - 15 / 180)) / 2)


def test_the_frame_plays_no_part_and_symmetry_is_honoured():
    text = '[{"id": 0, "bbox_2d": [0, 0, 500, 500], "rotation": 180}, {"id": 1, "bbox_2d": [500, 500, 750, 750], "rotation": 90}]'
    pred = TASK.parse_answer(text)
    frame = ImageTransform.resize(200, 200, 448, 336)
    assert TASK.accuracy(pred, sample(), frame=frame) == TASK.accuracy(pred, sample())
    assert TASK.evaluate([pred], [sample()])["s_rotation"] == pytest.approx(0.5)  # the bed is 180 off
    symmetric = IsrRefineTask(rotation_symmetry={"bed": 2})
    assert symmetric.evaluate([pred], [sample()])["s_rotation"] == pytest.approx(1.0)


@pytest.mark.parametrize("text", [None, "", "None", "[]", "[1, 2]", '[{"id": 0}]', '{"bbox_2d": "x"}', "[{]"])
def test_junk_never_raises_and_scores_zero(text):
    pred = TASK.parse_answer(text)
    assert TASK.accuracy(pred, sample()) == 0.0
    assert TASK.evaluate([pred], [sample()]) == {"s_bbox": 0.0, "s_rotation": 0.0}


def test_parse_layout_reads_fences_and_bare_objects():
    assert parse_layout('<answer>```json\n[{"id": 3, "bbox_2d": [1, 2, 3, 4], "rotation": "90"}]\n```</answer>') == [
        {"bbox_2d": [1.0, 2.0, 3.0, 4.0], "rotation": 90.0, "id": 3}]
    assert parse_layout('{"bbox_2d": [3, 4, 1, 2]}') == [{"bbox_2d": [1.0, 2.0, 3.0, 4.0], "rotation": None}]


def test_files_round_trip_and_bad_records_name_themselves(tmp_path):
    Image.new("RGB", (200, 200)).save(tmp_path / "room.png")
    record = {"id": "room-1", "image": "room.png", "objects": REFERENCE, "layout": LAYOUT, "split_note": "kept"}
    path = tmp_path / "refine.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (loaded,) = TASK.load(path)
    assert loaded.solution["objects"] == REFERENCE and loaded.meta["layout"] == LAYOUT
    assert loaded.meta["split_note"] == "kept" and (loaded.width, loaded.height) == (200, 200)
    assert '"label": "bed"' in TASK.question(loaded) and "[25, 0, 525, 500]" in TASK.question(loaded)
    TASK.save([loaded], tmp_path / "again.jsonl")
    (again,) = TASK.load(tmp_path / "again.jsonl")
    assert again.solution == loaded.solution and again.meta == loaded.meta
    bad = dict(record, layout=[{**LAYOUT[0], "label": "sofa"}, LAYOUT[1]])
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"refine.jsonl line 1: 'layout' and 'objects' must hold the same ids"):
        TASK.load(path)
    no_ids = dict(record, objects=[{k: v for k, v in o.items() if k != "id"} for o in REFERENCE],
                  layout=[{k: v for k, v in o.items() if k != "id"} for o in LAYOUT])
    path.write_text(json.dumps(no_ids) + "\n")
    assert [o["id"] for o in TASK.load(path)[0].solution["objects"]] == [0, 1]


def test_toy_rooms_perturb_a_tidy_layout_within_the_stated_bounds():
    for seed in range(20):
        img, reference, current = make_refine_room(random.Random(seed), 112, max_shift=0.06, min_turn=8, max_turn=30)
        assert img.size == (112, 112)
        assert [o["id"] for o in reference] == [o["id"] for o in current]
        for ref, cur in zip(reference, current, strict=True):
            assert ref["rotation"] % 90 == 0 and ref["label"] == cur["label"]
            assert 8 - 1e-6 <= angular_error(cur["rotation"], ref["rotation"]) <= 30 + 1e-6
            assert all(0 <= v <= 112 for v in cur["bbox_2d"])
    a = make_refine_room(random.Random(5), 112)
    b = make_refine_room(random.Random(5), 112)
    assert a[1:] == b[1:] and a[0].tobytes() == b[0].tobytes()
