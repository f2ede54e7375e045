"""REC with several images per sample (issue 27 item 2): records, the worked example, ``syngrpo check``.

The worked example is ``tests/fixtures/rec-two-images`` (docs/tasks/rec.md, "Several images"): two toy
scenes per record, the box in one of them (``box_image``), the expression naming it ("the green circle
in the second image").  It is what ``RecTask().make_toy_dataset(..., images_per_sample=2)`` writes
(n=4, seed 0, 56 px); the first test regenerates it and compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from syngrpo.cli import main
from syngrpo.config import load_train_config
from syngrpo.hookspecs import hookimpl
from syngrpo.perception.geometry import ImageTransform
from syngrpo.testing import registry_with
from syngrpo.train.preflight import check_config
from syngrpo.types import Sample
from tasks_rec.task import RecTask

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rec-two-images"


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask()


def test_the_worked_example_is_what_the_toy_generator_writes(tmp_path, task):
    task.make_toy_dataset(tmp_path, n=4, seed=0, image_size=56, images_per_sample=2)
    assert (tmp_path / "train.jsonl").read_text() == (FIXTURE / "train.jsonl").read_text()
    for png in (FIXTURE / "images").iterdir():
        with Image.open(png) as a, Image.open(tmp_path / "images" / png.name) as b:
            assert a.tobytes() == b.tobytes()


def test_two_image_records_load_with_their_box_image_and_save_back(tmp_path, task):
    samples = task.load(FIXTURE / "train.jsonl")
    assert [s.num_images for s in samples] == [2, 2, 2, 2]
    first = samples[0]
    assert first.box_image == 1 and first.problem.endswith("in the second image")
    assert first.images == (str(FIXTURE / "images" / "rec-train-00000.png"), first.image)
    assert first.image.endswith("rec-train-00001.png")  # the label's image: width, height and box are its own
    with Image.open(first.image) as im:
        assert im.size == (first.width, first.height)
    x1, y1, x2, y2 = first.solution
    assert 0 <= x1 < x2 <= first.width and 0 <= y1 < y2 <= first.height
    task.save(samples, tmp_path / "copy.jsonl")
    assert task.load(tmp_path / "copy.jsonl", image_root=FIXTURE) == samples
    record = json.loads((tmp_path / "copy.jsonl").read_text().splitlines()[0])
    assert isinstance(record["image"], list) and record["box_image"] == 1


def test_one_image_records_are_written_as_before(tmp_path, task):
    s = Sample(id="a", task="rec", image=str(tmp_path / "a.png"), problem="x", solution=[1, 1, 5, 5], width=9, height=9)
    task.save([s], tmp_path / "one.jsonl")
    record = json.loads((tmp_path / "one.jsonl").read_text())
    assert record["image"] == "a.png" and "box_image" not in record


@pytest.mark.parametrize(
    ("box_image", "needle"),
    [(None, "lists 2 images and has no box_image field; add 'box_image'"), (2, "box_image 2"), ("1", "box_image '1'")],
)
def test_several_images_need_a_valid_box_image_named_in_the_error(tmp_path, task, box_image, needle):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 20)).save(tmp_path / name)
    record = {"image": ["a.png", "b.png"], "solution": [1, 1, 5, 5], "normal_caption": "x"}
    if box_image is not None:
        record["box_image"] = box_image
    (tmp_path / "d.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=needle) as err:
        task.load(tmp_path / "d.jsonl")
    assert "d.jsonl" in str(err.value)


def test_a_one_image_task_refuses_a_list_of_several_images_instead_of_dropping_them(tmp_path):
    from tasks_ovd.task import OvdTask

    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 20)).save(tmp_path / name)
    record = {"image": ["a.png", "b.png"], "solution": [{"bbox_2d": [1, 1, 5, 5], "label": "cat"}]}
    (tmp_path / "o.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="lists 2 images, but this task reads one image per record"):
        OvdTask().load(tmp_path / "o.jsonl")


def test_box_image_must_index_the_images():
    with pytest.raises(ValueError, match=r"box_image must be an index into its 2 images \(0..1\), got 2"):
        Sample(
            id="a",
            task="rec",
            image="b.png",
            problem="",
            solution=[],
            width=1,
            height=1,
            other_images=("a.png",),
            box_image=2,
        )
    s = Sample.from_dict(
        {
            "id": "a",
            "task": "rec",
            "image": "b.png",
            "problem": "",
            "solution": [],
            "width": 1,
            "height": 1,
            "other_images": ["a.png", "c.png"],
            "box_image": 1,
        }
    )
    assert s.images == ("a.png", "b.png", "c.png") and s.other_images == ("a.png", "c.png")
    assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # through JSON (the data server, checkpoints)


def test_synthesis_replaces_the_box_image_and_the_others_travel_unchanged(task):
    """What the data server's result does to a sample (synthesis.client / transform_sample): the new image is
    the box image, resized labels follow it, the other images and their order stay."""
    s = task.load(FIXTURE / "train.jsonl")[0]
    moved = task.transform_sample(s, ImageTransform.resize(56, 56, 112, 112), "/tmp/synth.png")
    moved = moved.evolve(source_id=s.id, generation=1)
    assert moved.images == (s.images[0], "/tmp/synth.png") and moved.box_image == 1
    assert moved.solution == [2 * v for v in s.solution] and (moved.width, moved.height) == (112, 112)


def _config(tmp_path: Path, *extra: str) -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  policy: tiny\ndata:\n  task: rec\nsynthesis:\n  mode: off\n")
    return str(cfg)


def test_check_passes_the_worked_example_and_says_the_family_takes_two_images(tmp_path, capsys):
    code = main(
        ["check", "-c", _config(tmp_path), "--set", f"data.train={FIXTURE / 'train.jsonl'}", "--set", "data.eval=null"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "up to 2 images per sample (train 2); model family qwen2_5_vl takes them" in out


class OneImagePlugin:
    """A family that reads Qwen2.5-VL checkpoints but takes one image per prompt (chosen by name only)."""

    @hookimpl
    def register_model_families(self, register):
        from syngrpo_families.qwen2_5_vl import Qwen25VLFamily

        class OneImage(Qwen25VLFamily):
            name = "one_image"
            max_images = 1
            auto_select = False

        register("one_image", OneImage, description="test family: one image per prompt")


def test_check_refuses_several_images_for_a_family_that_takes_one_before_any_model_loads(tmp_path):
    registry = registry_with(OneImagePlugin(), autoload=True)
    cfg = load_train_config(
        _config(tmp_path),
        [
            f"data.train={FIXTURE / 'train.jsonl'}",
            "data.eval=null",
            "model.family=one_image",
            "model.policy=/nonexistent/policy",
        ],
    )
    report = check_config(cfg, registry)
    assert any("shows 2 images, but model family 'one_image' takes at most 1" in e for e in report.errors), (
        report.errors
    )


def test_the_default_question_of_a_two_image_sample_does_not_say_the_image(task):
    s = task.load(FIXTURE / "train.jsonl")[0]
    assert task.question(s) == (
        "Locate the green circle in the second image. Output the bounding box as "
        "[x1, y1, x2, y2] in pixels of that image."
    )
    custom = RecTask(question_template="Find {expression}.")
    assert custom.question(s) == "Find the green circle in the second image."


def test_check_refuses_toy_data_of_two_images_for_a_family_that_takes_one(tmp_path):
    registry = registry_with(OneImagePlugin(), autoload=True)
    cfg = load_train_config(_config(tmp_path), ["data.toy.options={images_per_sample: 2}", "model.family=one_image"])
    report = check_config(cfg, registry)
    assert any("takes at most 1" in e for e in report.errors), report.errors
    fine = check_config(load_train_config(_config(tmp_path), ["data.toy.options={images_per_sample: 2}"]), registry)
    assert fine.ok and any("model family qwen2_5_vl takes them" in n for n in fine.notes)
