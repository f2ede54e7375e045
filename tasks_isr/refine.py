"""ISR refinement: the second stage of Indoor Scene Refinement (paper §3.1, §4.1; task ``isr_refine``).

The model sees a top view of a room and its *current* layout (every object's id, label, box and
rotation, written into the prompt) and answers the *refined* layout: the same objects with new
boxes and rotations.  It is scored against the reference layout with S_bbox and S_rotation
(:func:`tasks_isr.metrics.refinement_terms`; definitions and the reasons for them in
docs/tasks/isr.md, since the paper's appendix that defines them is not public).

Coordinates in the prompt and in the answer are **relative to the image, 0-1000** (the
Qwen2-VL / Qwen3-VL convention).  The prompt is written before the processor decides how to
resize the image, so pixel numbers in it could not match the pixels the model sees; relative
ones do whatever the resize.  Hence ``accuracy`` ignores ``frame``: an answer is read in the
frame of the layout it was given.  Labels (the reference, the current layout, ``transform_solution``)
are kept in pixels of the original image like every other task's.

``solution`` is ``{"width", "height", "objects"}`` (the reference layout plus the image size it is
measured in, so that :meth:`format_answer` can write relative coordinates);
``meta["layout"]`` is the current layout.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import build_samples, image_size, read_records, resolve_image, tidy_number, write_records
from syngrpo.perception.answers import as_box, as_number, json_values, unwrap
from syngrpo.perception.detection import normalize_label
from syngrpo.perception.geometry import ImageTransform, valid_box
from syngrpo.perception.task import Task, sample_record, split_frames
from syngrpo.types import Box, Sample
from tasks_isr.metrics import refinement_terms
from tasks_isr.refine_toy import make_refine_room
from tasks_isr.rotation import normalize_rotation, transform_rotation
from tasks_isr.toy import FURNITURE

#: coordinates in the prompt and the answer run from 0 to this, across the image
SCALE = 1000.0
#: record keys the loader maps onto Sample fields (the rest go to ``meta``)
_RECORD_KEYS = {"id", "image", "width", "height", "problem", "objects", "solution", "layout",
                "source_id", "generation", "description"}


def _objects(raw: Any, where: str, what: str) -> list[dict[str, Any]]:
    """Layout objects in normal form: ``id`` (default: the index), label, pixel box, rotation or None."""
    if not isinstance(raw, list):
        raise ValueError(f"{where} needs a list {what!r}")
    out = []
    for i, obj in enumerate(raw):
        if not (isinstance(obj, dict) and valid_box(obj.get("bbox_2d")) and isinstance(obj.get("label"), str)):
            raise ValueError(f"{where}: object {i} of {what!r} needs a valid bbox_2d and a string label: {obj!r}")
        rotation = as_number(obj.get("rotation")) if obj.get("rotation") is not None else None
        out.append({"id": obj.get("id", i), "label": normalize_label(obj["label"]),
                    "bbox_2d": [float(v) for v in obj["bbox_2d"]],
                    "rotation": normalize_rotation(rotation) if rotation is not None else None})
    ids = [o["id"] for o in out]
    if len(set(map(str, ids))) != len(ids):
        raise ValueError(f"{where}: ids of {what!r} repeat: {ids}")
    return out


def _relative(box: Sequence[float], width: float, height: float) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 / width * SCALE, y1 / height * SCALE, x2 / width * SCALE, y2 / height * SCALE]


def _pixels(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 * width / SCALE, y1 * height / SCALE, x2 * width / SCALE, y2 * height / SCALE)


def _write(objects: Sequence[Mapping[str, Any]], width: float, height: float, *,
           digits: int | None = None) -> list[dict[str, Any]]:
    """Objects as the prompt (rounded to ``digits``) and the answer write them: relative boxes."""
    def num(v: float) -> float | int:
        return tidy_number(round(v, digits) if digits is not None else v)

    return [{"id": o["id"], "label": o["label"],
             "bbox_2d": [num(v) for v in _relative(o["bbox_2d"], width, height)],
             "rotation": None if o.get("rotation") is None else num(float(o["rotation"]))}
            for o in objects]


def parse_layout(text: str | None) -> list[dict[str, Any]] | None:
    """The objects of a refined-layout answer, or None when it holds no list. Never raises.

    Each usable object has a box of four numbers (``bbox_2d``, relative 0-1000) and may carry an
    ``id`` and a ``rotation``; unusable items are dropped.  An answer whose list had items but
    none usable is unreadable.
    """
    if not isinstance(text, str):
        return None
    for value in json_values(unwrap(text)):
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            continue
        out = []
        for item in value[:500]:
            if not isinstance(item, dict):
                continue
            box = as_box(item.get("bbox_2d"))
            if box is None:
                continue
            rotation = as_number(item.get("rotation"))
            obj: dict[str, Any] = {"bbox_2d": list(box), "rotation": rotation}
            if isinstance(item.get("id"), (int, str)) and not isinstance(item.get("id"), bool):
                obj["id"] = item["id"]
            out.append(obj)
        return out if out or not value else None
    return None


class IsrRefineTask(Task):
    """ISR's refinement stage: current layout in, refined layout out; S_bbox / S_rotation.

    Options (``task_options``): ``rotation_symmetry`` label -> order of its top-view symmetry
    (as for ``isr``); ``weights`` of S_bbox and S_rotation in the reward (default ``[0.5, 0.5]``).
    """

    name: ClassVar[str] = "isr_refine"
    answer_format: ClassVar[str] = (
        'a JSON list with every object of the layout: [{"id": 0, "bbox_2d": [x1, y1, x2, y2], "rotation": 90}, ...]'
    )

    def __init__(self, *, rotation_symmetry: Mapping[str, int] | None = None,
                 weights: Sequence[float] = (0.5, 0.5)) -> None:
        self.rotation_symmetry = {normalize_label(k): int(v) for k, v in (rotation_symmetry or {}).items()}
        if any(v < 1 for v in self.rotation_symmetry.values()):
            raise ValueError(f"rotation_symmetry orders must be positive integers, got {rotation_symmetry}")
        w = [float(v) for v in weights]
        if len(w) != 2 or any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
            raise ValueError(f"weights must be two non-negative numbers (S_bbox, S_rotation), not both 0: {weights!r}")
        self.weights = (w[0] / sum(w), w[1] / sum(w))

    # ---- data -------------------------------------------------------------------------
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a JSON list or JSONL file of refinement records (format in docs/tasks/isr.md)."""
        path = Path(path)
        root = Path(image_root) if image_root is not None else path.parent
        return build_samples(path, read_records(path),
                             lambda i, r: self._from_record(r, root, f"{path.stem}-{i}", f"{path}:{i}"))

    def _from_record(self, record: dict[str, Any], root: Path, default_id: str, where: str) -> Sample:
        if "image" not in record:
            raise ValueError(f"{where}: refinement record has no 'image'")
        reference = _objects(record.get("objects", record.get("solution")), where, "objects")
        layout = _objects(record.get("layout"), where, "layout")
        ref_ids = {str(o["id"]): o["label"] for o in reference}
        cur_ids = {str(o["id"]): o["label"] for o in layout}
        if ref_ids != cur_ids:
            raise ValueError(f"{where}: 'layout' and 'objects' must hold the same ids with the same labels: "
                             f"{cur_ids} vs {ref_ids}")
        image = resolve_image(record["image"], root)
        width, height = record.get("width"), record.get("height")
        if not width or not height:
            width, height = image_size(image)
        meta = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
        meta["layout"] = layout
        sample = Sample(id=str(record.get("id", default_id)), task=self.name, image=image,
                        problem=record.get("problem") or "",
                        solution={"width": int(width), "height": int(height), "objects": reference},
                        width=int(width), height=int(height), source_id=record.get("source_id"),
                        generation=int(record.get("generation", 0) or 0), description=record.get("description"),
                        meta=meta)
        return sample

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write JSONL (a JSON list for ``.json``) that :meth:`load` reads back; pixels, like the input."""
        write_records([sample_record(s.evolve(meta={k: v for k, v in s.meta.items() if k != "layout"}), path, {
            "problem": s.problem, "objects": s.solution["objects"], "layout": s.meta["layout"],
        }) for s in samples], path)

    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, **options: Any) -> list[Sample]:
        """Toy rooms whose reference layouts were perturbed (:func:`tasks_isr.refine_toy.make_refine_room`).

        The image shows the perturbed (current) room; the reference is the tidy one it came from.
        """
        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"isr-refine-toy:{split}:{seed}")
        samples = []
        for i in range(n):
            img, reference, layout = make_refine_room(rng, image_size, **options)
            image = os.path.abspath(out / "images" / f"isr_refine_{split}_{i:05d}.png")
            img.save(image)
            samples.append(Sample(
                id=f"isr-refine-{split}-{seed}-{i:05d}", task=self.name, image=image, problem="",
                solution={"width": image_size, "height": image_size, "objects": reference},
                width=image_size, height=image_size, meta={"layout": layout, "generator": "tasks_isr.refine_toy"},
            ))
        self.save(samples, out / f"{split}.jsonl")
        return samples

    # ---- prompting and answers --------------------------------------------------------
    def question(self, sample: Sample) -> str:
        if sample.problem:
            return sample.problem
        layout = json.dumps(_write(sample.meta.get("layout") or [], sample.width, sample.height, digits=1))
        return (
            "This is a top-view rendering of a room. Its current layout, one object per entry, with boxes "
            "[x1, y1, x2, y2] relative to the image from 0 to 1000 and rotations in degrees clockwise "
            f"(0: the front faces the bottom of the image): {layout}. Refine the layout so the room is "
            "well arranged: give every object, by its id, a new box and rotation in the same units. "
            f"Answer with {self.answer_format}."
        )

    def parse_answer(self, text: str | None) -> list[dict[str, Any]] | None:
        """The refined objects (:func:`parse_layout`), boxes still relative. Never raises."""
        return parse_layout(text)

    def format_answer(self, solution: Any) -> str:
        """The reference layout written as the model should answer (relative coordinates)."""
        objects = [{k: v for k, v in o.items() if k != "label"}
                   for o in _write(solution["objects"], solution["width"], solution["height"])]
        return json.dumps(objects)

    def _answer_by_id(self, prediction: Any, sample: Sample) -> tuple[dict[Any, dict[str, Any]], int] | None:
        """Answer objects keyed by reference id (list position without ids), boxes in pixels; and N_answer."""
        if not isinstance(prediction, list):
            return None
        reference = sample.solution["objects"]
        known = {str(o["id"]): o["id"] for o in reference}
        out: dict[Any, dict[str, Any]] = {}
        for pos, obj in enumerate(prediction):
            if not isinstance(obj, dict):
                continue
            box = as_box(obj.get("bbox_2d"))
            if box is None:
                continue
            if "id" in obj:
                key = known.get(str(obj["id"]))
            else:
                key = reference[pos]["id"] if pos < len(reference) else None
            if key is None or key in out:
                continue  # an unknown id, or a second answer for one object: the first one counts
            rotation = as_number(obj.get("rotation"))
            out[key] = {"bbox_2d": _pixels(box, sample.width, sample.height), "rotation": rotation}
        return out, len(prediction)

    def accuracy(self, prediction: Any | None, sample: Sample, *, frame: ImageTransform | None = None) -> float:
        """R_acc of refinement: ``min(1, N_ref / N_answer) * (w_b * S_bbox + w_r * S_rotation)`` of the image.

        ``frame`` plays no part: answers are relative to the image, like the layout in the prompt.
        Without rotations in the reference the reward is ``S_bbox``.  Never raises.
        """
        try:
            read = self._answer_by_id(prediction, sample)
            if read is None:
                return 0.0
            answer, n_answer = read
            reference = sample.solution["objects"]
            if not reference:
                return 1.0 if n_answer == 0 else 0.0
            box_sum, n, rot_sum, n_rot = refinement_terms(reference, answer, symmetry=self.rotation_symmetry)
            s_bbox = box_sum / n
            value = s_bbox if n_rot == 0 else self.weights[0] * s_bbox + self.weights[1] * rot_sum / n_rot
            value *= min(1.0, len(reference) / n_answer) if n_answer else 1.0
        except (TypeError, ValueError, KeyError, OverflowError, ZeroDivisionError):
            return 0.0
        return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0

    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """``s_bbox`` and ``s_rotation`` pooled over every reference object of the split (docs/tasks/isr.md).

        An unreadable prediction leaves its objects unanswered (0).  A split without objects
        (without rotations) scores 1 for an empty answer set.
        """
        split_frames(predictions, samples, frames)  # checks the lengths
        box_sum = rot_sum = 0.0
        n = n_rot = 0
        for prediction, sample in zip(predictions, samples, strict=True):
            read = self._answer_by_id(prediction, sample)
            answer = read[0] if read is not None else {}
            b, k, r, kr = refinement_terms(sample.solution["objects"], answer, symmetry=self.rotation_symmetry)
            box_sum, n, rot_sum, n_rot = box_sum + b, n + k, rot_sum + r, n_rot + kr
        return {"s_bbox": box_sum / n if n else 1.0, "s_rotation": rot_sum / n_rot if n_rot else 1.0}

    # ---- labels under image transforms -----------------------------------------------
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        """The objects the image shows: the current layout (synthesis must keep them)."""
        return [tuple(float(v) for v in o["bbox_2d"]) for o in sample.meta.get("layout") or []]  # type: ignore[misc]

    def foreground_labels(self, sample: Sample) -> list[str]:
        """The current layout's labels, one per :meth:`foreground_boxes` box."""
        return [str(o["label"]) for o in sample.meta.get("layout") or []]

    def transform_solution(self, solution: Any, transform: ImageTransform) -> dict[str, Any]:
        """The reference after the image went through ``transform``: boxes mapped, rotations turned, new size."""
        return {"width": transform.width or solution["width"], "height": transform.height or solution["height"],
                "objects": _move(solution["objects"], transform)}

    def transform_sample(self, sample: Sample, transform: ImageTransform, image_path: str) -> Sample:
        """Also moves the current layout in ``meta["layout"]``."""
        moved = super().transform_sample(sample, transform, image_path)
        return moved.evolve(meta={**moved.meta, "layout": _move(sample.meta.get("layout") or [], transform)})

    def class_names(self) -> list[str]:
        return list(FURNITURE)


def _move(objects: Sequence[Mapping[str, Any]], transform: ImageTransform) -> list[dict[str, Any]]:
    """Layout objects after an image transform: every object kept (identity matters), boxes clipped."""
    return [{**o, "bbox_2d": [float(v) for v in transform.box(o["bbox_2d"])],
             "rotation": transform_rotation(o.get("rotation"), transform)} for o in objects]
