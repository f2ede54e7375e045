"""The benchmark reads each model family's boxes in the frame that family answers in.

For every installed family, a stand-in engine answers the label box written the way the family's makers
document it (not through syngrpo's frames): absolute pixels of the resized input for Qwen2.5-VL, 0-1000 of the
image for Qwen2-VL, Qwen3-VL and GLM-4.1V (REFERENCE.md).  The input size comes from what the processor made
(``image_grid_thw`` x patch).  Answers in the family's own convention score 1; the other convention does not.
"""

from __future__ import annotations

import json
import re

import pytest

from syngrpo.models.family import get_family
from syngrpo.models.policy import load_policy
from syngrpo.plugins import get_registry
from syngrpo.train.benchmark import get_benchmark, run_benchmark
from tests.data import fixtures
from tests.data.scripted import ScriptedAnswers

#: how each family writes boxes, as documented by its makers (REFERENCE.md, "Tiny models of other VLM families")
DOCUMENTED = {"qwen2_5_vl": "pixels", "qwen2_vl": "relative", "qwen3_vl": "relative", "glm4v": "relative",
              "internvl": "relative"}
REGISTRY = get_registry()
FAMILIES = REGISTRY.names("model_families")
#: images the processors resize (none of these sides is a multiple of a patch grid), and a box in each
IMAGES = {"a": ((70, 50), [30.0, 20.0, 60.0, 45.0]), "b": ((100, 61), [5.0, 8.0, 45.0, 50.0]),
          "c": ((57, 90), [12.0, 40.0, 50.0, 85.0])}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    records = []
    for i, (name, (size, box)) in enumerate(IMAGES.items()):
        fixtures.image(root / "images" / f"{name}.jpg", size=size, box=box)
        record = fixtures.vlmr1_rec_record(i, f"{name}.jpg", box, f"thing-{name}")
        record["width"], record["height"] = size
        records.append(record)
    path = root / "refcoco_val.json"
    path.write_text(json.dumps(records))
    return path, root / "images"


def _answer(convention: str, patch: int):
    def answer(i, batch):
        name = re.search(r"thing-(\w)", batch.prompts[i]).group(1)
        (w, h), box = IMAGES[name]
        _, gh, gw = (int(v) for v in batch.image_grid_thw[i])
        if convention == "pixels":  # pixels of the image the model saw
            sx, sy = gw * patch / w, gh * patch / h
        else:  # 0-1000 of the image
            sx, sy = 1000 / w, 1000 / h
        x1, y1, x2, y2 = (round(v) for v in (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
        return f'<answer>{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}</answer>'

    return answer


def test_every_installed_family_has_a_documented_convention_here():
    missing = sorted(set(FAMILIES) - set(DOCUMENTED))
    assert not missing, f"add the documented box convention of {missing} to DOCUMENTED (with its source)"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_familys_answers_in_its_own_convention_score_and_the_other_does_not(family, split, tmp_path):
    path, images = split
    bundle = load_policy(get_family(family).build_tiny(tmp_path / family, seed=0))
    bench = get_benchmark(REGISTRY, "refcoco_val")
    own = DOCUMENTED[family]
    other = "relative" if own == "pixels" else "pixels"
    right = run_benchmark(bench, bundle, ScriptedAnswers(answer=_answer(own, bundle.patch_size)), registry=REGISTRY,
                          data_file=path, image_root=images)
    wrong = run_benchmark(bench, bundle, ScriptedAnswers(answer=_answer(other, bundle.patch_size)), registry=REGISTRY,
                          data_file=path, image_root=images)
    assert right.metrics["acc@0.5"] == 1.0, right.records
    assert right.metrics["mean_iou"] > 0.85
    assert wrong.metrics["acc@0.5"] < 1.0 and wrong.metrics["mean_iou"] < right.metrics["mean_iou"] - 0.3
    resized = [r for r in right.records if r["input_size"] != r["image_size"]]
    assert resized, "the test images must be resized by the processor for the frame to matter"
