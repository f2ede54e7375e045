"""The OVD task: detections read from any answer, eq. 3 in the right frame, mAP/GP/GR, files, toy data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.toyshapes import COLOURS, SHAPES
from syngrpo.plugins import get_registry
from syngrpo.types import Sample
from tasks_ovd.task import OvdTask, parse_detections

GT = [{"bbox_2d": [10.0, 10.0, 30.0, 30.0], "label": "cat"}, {"bbox_2d": [50.0, 20.0, 90.0, 60.0], "label": "dog"}]


@pytest.fixture(scope="module")
def task() -> OvdTask:
    return OvdTask()


def _sample(solution=GT, width=100, height=80) -> Sample:
    return Sample(id="s", task="ovd", image="/nonexistent.png", problem="", solution=list(solution),
                  width=width, height=height, meta={"categories": ["cat", "dog", "bird"]})


# ---- answers ---------------------------------------------------------------------------

CANONICAL = [{"bbox_2d": [10.0, 10.0, 30.0, 30.0], "label": "cat"}]


@pytest.mark.parametrize("text", [
    '[{"bbox_2d": [10, 10, 30, 30], "label": "cat"}]',
    '```json\n[{"bbox_2d": [10, 10, 30, 30], "label": "cat"}]\n```',
    '<answer>```json\n[{"bbox_2d": [10.0, 10.0, 30.0, 30.0], "label": "cat"}]\n```</answer>',
    'Here they are: [{"bbox_2d": [10, 10, 30, 30], "label": "cat"}] done.',
    '{"bbox_2d": [10, 10, 30, 30], "label": "cat"}',
    '{"objects": [{"bbox": [10, 10, 30, 30], "category": "cat"}]}',
    "[{'bbox_2d': [10, 10, 30, 30], 'label': 'cat'}]",
    '[{"bbox_2d": [30, 30, 10, 10], "label": " cat "}]',
    '[{"bbox_2d": [10, 10, 30, 30], "label": "cat"}, {"bbox_2d": [1, 2, 3], "label": "dog"}, {"label": "x"}]',
])
def test_every_harmless_answer_variant_reads_as_the_same_detections(task, text):
    assert task.parse_answer(text) == CANONICAL


@pytest.mark.parametrize("text", ["None", "none.", "null", "[]", "<answer>None</answer>", "```json\n[]\n```"])
def test_none_and_empty_lists_mean_nothing_is_there(task, text):
    assert task.parse_answer(text) == []


@pytest.mark.parametrize("text", [None, "", "   ", "a cat", "[1, 2, 3, 4]", '[{"label": "cat"}]',
                                  '[{"bbox_2d": [1, 2, 3, 4], "label": 5}]', "[" * 3000, "9" * 5000])
def test_answers_without_a_readable_detection_are_unreadable(task, text):
    assert task.parse_answer(text) is None


def test_scores_are_kept_to_rank_predictions():
    (det,) = parse_detections('[{"bbox_2d": [0, 0, 1, 1], "label": "a", "score": 0.25}]')
    assert det["score"] == 0.25


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=False), st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.sampled_from(["bbox_2d", "label", "score", "bbox", "x"]), kids, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _json.map(json.dumps)))
def test_parse_answer_never_raises_and_its_reward_stays_in_range(text):
    t = OvdTask()
    parsed = t.parse_answer(text)
    assert parsed is None or isinstance(parsed, list)
    assert 0.0 <= t.accuracy(parsed, _sample()) <= 1.0
    assert 0.0 <= OvdTask(drop_unknown_labels=True).accuracy(parsed, _sample()) <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.one_of(_json, st.from_type(object)))
def test_accuracy_of_any_object_never_raises(prediction):
    assert 0.0 <= OvdTask().accuracy(prediction, _sample()) <= 1.0


# ---- eq. 3 in the right frame --------------------------------------------------------------


def test_perfect_detections_score_one_and_duplicates_pay_the_redundancy_scale(task):
    s = _sample()
    assert task.accuracy(task.parse_answer(task.format_answer(GT)), s) == pytest.approx(1.0)
    assert task.accuracy(GT + GT, s) == pytest.approx(0.5)  # min(1, 2/4) * 1


def test_detections_on_the_resized_image_score_one_after_mapping_back(task):
    s = _sample(width=100, height=80)
    to_model = ImageTransform.resize(100, 80, 224, 168)
    seen = task.parse_answer(task.format_answer(task.transform_solution(s.solution, to_model)))
    assert task.accuracy(seen, s, frame=to_model) == pytest.approx(1.0)
    assert task.accuracy(seen, s) < 0.5


def test_a_hallucinated_class_costs_reward_unless_vlm_r1_compatibility_is_on(task):
    s = _sample()
    preds = GT + [{"bbox_2d": [0, 60, 10, 70], "label": "bird"}]
    # mAP over cat, dog, bird = (1 + 1 + 0) / 3; redundancy min(1, 2/3)
    assert task.accuracy(preds, s) == pytest.approx(2 / 3 * 2 / 3)
    assert OvdTask(drop_unknown_labels=True).accuracy(preds, s) == pytest.approx(2 / 3 * 1.0)


def test_saying_none_is_right_only_when_nothing_is_there(task):
    assert task.accuracy(task.parse_answer("None"), _sample(solution=[])) == 1.0
    assert task.accuracy(task.parse_answer("None"), _sample()) == 0.0
    assert task.accuracy(GT, _sample(solution=[])) == 0.0
    assert task.accuracy(None, _sample(solution=[])) == 0.0


def test_evaluate_gives_dataset_map_and_greedy_precision_and_recall(task):
    a, b = _sample(), _sample(solution=GT[:1])
    preds = [
        [GT[0], {"bbox_2d": [52, 22, 88, 58], "label": "dog"}],  # IoU 0.81 with the dog
        [GT[0], {"bbox_2d": [70, 70, 80, 80], "label": "cat"}],  # a stray cat
    ]
    metrics = task.evaluate(preds, [a, b])
    assert metrics["gp"] == pytest.approx(3 / 4)
    assert metrics["gr"] == pytest.approx(3 / 3)
    # dog: one hit at IoU 0.81 (thresholds 0.50..0.80 of 10) -> AP 7/10 exactly at those, 0 after
    # cat: hits in both images, the stray ranked last (ties keep image order) -> AP 1
    assert metrics["map"] == pytest.approx((1.0 + 0.7) / 2, abs=1e-9)


def test_evaluate_counts_unreadable_answers_as_predicting_nothing(task):
    assert task.evaluate([None], [_sample()]) == {"map": 0.0, "gp": 0.0, "gr": 0.0}
    perfect = task.evaluate([GT], [_sample()])
    assert perfect == pytest.approx({"map": 1.0, "gp": 1.0, "gr": 1.0})


# ---- labels under transforms ----------------------------------------------------------------


def test_objects_cropped_away_are_dropped_and_extra_fields_kept(task):
    solution = [{"bbox_2d": [0, 0, 10, 10], "label": "a", "colour": "red"},
                {"bbox_2d": [60, 60, 70, 70], "label": "b"}]
    cropped = task.transform_solution(solution, ImageTransform.crop(0, 0, 50, 50))
    assert cropped == [{"bbox_2d": [0.0, 0.0, 10.0, 10.0], "label": "a", "colour": "red"}]
    pasted = task.transform_solution(solution, ImageTransform.paste(5, 7, 200, 200))
    assert [o["bbox_2d"] for o in pasted] == [[5.0, 7.0, 15.0, 17.0], [65.0, 67.0, 75.0, 77.0]]


# ---- files -----------------------------------------------------------------------------


def _png(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 200, 200)).save(path)


def test_vlm_r1_ovd_jsonl_variants_load(tmp_path, task):
    _png(tmp_path / "imgs" / "a.png")
    records = [
        {"image": "a.png", "problem": "Find cats and dogs.",
         "solution": '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]\n```'},
        {"image": "a.png", "problem": "Find birds.", "solution": "None", "id": "x"},
        {"image": "a.png", "categories": "cat, dog", "objects": [{"bbox": [3, 3, 9, 9], "category": "dog", "iscrowd": 0}],
         "width": 640, "height": 480},
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>Detect cats."},
                                             {"from": "gpt", "value": '[{"bbox_2d": [0, 0, 5, 5], "label": "cat"}]'}]},
    ]
    (tmp_path / "ovd.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    a, b, c, d = task.load(tmp_path / "ovd.jsonl", image_root=tmp_path / "imgs")
    assert (a.problem, a.solution, a.width, a.height) == ("Find cats and dogs.", [{"bbox_2d": [1, 2, 30, 40], "label": "cat"}], 64, 48)
    assert a.meta["categories"] == ["cat"]
    assert (b.id, b.solution) == ("x", [])
    assert c.solution == [{"bbox_2d": [3, 3, 9, 9], "label": "dog", "iscrowd": 0}]
    assert c.meta["categories"] == ["cat", "dog"] and (c.width, c.height) == (640, 480)
    assert task.question(c).startswith("Detect every object of these categories in the image: cat, dog.")
    assert (d.problem, d.solution) == ("Detect cats.", [{"bbox_2d": [0, 0, 5, 5], "label": "cat"}])
    assert "dog" in task.class_names()


def test_records_that_cannot_be_right_are_errors(tmp_path, task):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "a.png", "solution": [{"label": "cat"}], "width": 9, "height": 9}))
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: object 1 of the solution has no readable box"):
        task.load(tmp_path / "bad.jsonl")
    (tmp_path / "vague.jsonl").write_text(json.dumps({"image": "a.png", "solution": "None", "width": 9, "height": 9}))
    with pytest.raises(ValueError, match="nothing says what to detect"):
        task.load(tmp_path / "vague.jsonl")


def test_save_then_load_gives_the_samples_back(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path / "toy", n=4, seed=1, style="ood")
    samples[1] = samples[1].evolve(source_id="orig", generation=1, description="a desert")
    task.save(samples, tmp_path / "elsewhere" / "again.jsonl")
    loaded = task.load(tmp_path / "elsewhere" / "again.jsonl")
    assert [s.to_dict() for s in loaded] == [s.to_dict() for s in samples]


def test_the_written_jsonl_is_the_vlm_r1_shape(tmp_path, task):
    task.make_toy_dataset(tmp_path, n=2, seed=0, split="val")
    record = json.loads((tmp_path / "val.jsonl").read_text().splitlines()[0])
    assert record["image"].startswith("images/") and record["problem"] and isinstance(record["solution"], list)
    assert set(record["solution"][0]) >= {"bbox_2d", "label"}


# ---- toy data ----------------------------------------------------------------------------


def test_the_toy_generator_is_deterministic_and_labels_are_exact(tmp_path, task):
    a = task.make_toy_dataset(tmp_path / "a", n=8, seed=11, style="ood")
    b = task.make_toy_dataset(tmp_path / "b", n=8, seed=11, style="ood")
    assert [s.solution for s in a] == [s.solution for s in b]
    for s, t in zip(a, b, strict=True):
        pixels = np.asarray(Image.open(s.image).convert("RGB"))
        assert np.array_equal(pixels, np.asarray(Image.open(t.image).convert("RGB")))
        for obj in s.solution:
            x1, y1, x2, y2 = (int(v) for v in obj["bbox_2d"])
            mask = np.all(pixels[y1:y2, x1:x2] == COLOURS[obj["colour"]], axis=-1)
            assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
            assert obj["label"] in SHAPES


def test_toy_prompts_list_every_present_class_and_some_absent_ones(tmp_path, task):
    samples = task.make_toy_dataset(tmp_path, n=20, seed=0, n_absent=(1, 2))
    for s in samples:
        present = {o["label"] for o in s.solution}
        cats = s.meta["categories"]
        assert present < set(cats) and cats == sorted(cats)
        assert ", ".join(cats) in task.question(s)


def test_a_larger_toy_image_scales_the_shapes(tmp_path, task):
    (small,) = task.make_toy_dataset(tmp_path / "s", n=1, seed=0, image_size=112)
    (large,) = task.make_toy_dataset(tmp_path / "l", n=1, seed=0, image_size=448)
    assert Image.open(large.image).size == (448, 448)
    side = lambda s: max(o["bbox_2d"][2] - o["bbox_2d"][0] for o in s.solution)  # noqa: E731
    assert side(large) > 2 * side(small)


# ---- registration ----------------------------------------------------------------------


def test_the_ovd_task_is_created_through_its_entry_point_with_options():
    registry = get_registry()
    task = registry.create("tasks", "ovd", drop_unknown_labels=True)
    assert isinstance(task, OvdTask) and task.drop_unknown_labels
    entry = registry.get("tasks", "ovd")
    assert (entry.plugin, entry.distribution) == ("ovd", "syngrpo")


def test_importing_the_plugin_module_stays_cheap():
    code = ("import sys, tasks_ovd.plugin; "
            "print(sorted(m for m in ('tasks_ovd.task', 'PIL', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
