"""ISR: indoor-scene perception from top-view renderings (paper §3.1 and Table 3).

The model lists every piece of furniture with its box, label and rotation.  The
accuracy reward is the OVD reward (eq. 3: ``min(1, N_gt/N_pred) * mAP``; the
paper's R^isr_acc is identical to R^ovd_acc), which ignores rotations; the
split metrics add GP/GR and the quality of the matched objects (``matched_iou``,
``matched_rotation``, :mod:`tasks_isr.metrics`).  The refinement stage is the ``isr_refine`` task
(:mod:`tasks_isr.refine`).  The data format is documented in docs/tasks/isr.md.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import build_samples, image_size, read_records, resolve_image, write_records
from syngrpo.perception.answers import parse_detections, to_detection
from syngrpo.perception.detection import (
    coco_ap_dataset,
    map_detections,
    normalize_label,
    ovd_reward,
    precision_recall_dataset,
)
from syngrpo.perception.geometry import ImageTransform, valid_box
from syngrpo.perception.task import Task, original_frame, sample_record, split_frames
from syngrpo.types import Box, Sample
from tasks_isr.metrics import matched_pair_scores
from tasks_isr.rotation import normalize_rotation, transform_rotation
from tasks_isr.toy import FURNITURE, make_room

#: record keys the loader maps onto :class:`Sample` fields; every other key goes to ``meta``
_RECORD_KEYS = {"id", "image", "width", "height", "problem", "objects", "solution",
                "source_id", "generation", "description"}


def _parse_object(item: Any) -> dict[str, Any] | None:
    """One ``{"bbox_2d", "label", "rotation"[, "score"]}`` object, or ``None`` when it is unusable.

    The shared reader (:func:`syngrpo.perception.answers.to_detection`) plus ISR's two
    normal forms: labels compare lower case and single-spaced, rotations fold into [0, 360).
    """
    det = to_detection(item, numbers=("rotation",))
    return _normal_form(det) if det is not None else None


def _normal_form(det: dict[str, Any]) -> dict[str, Any] | None:
    label = normalize_label(det["label"])
    if not label:
        return None
    rotation = det.get("rotation")
    return {**det, "label": label, "rotation": normalize_rotation(rotation) if rotation is not None else None}


def parse_objects(text: str | None) -> list[dict[str, Any]] | None:
    """The objects of an answer, or ``None`` when it holds no readable JSON list. Never raises.

    The detection-answer rules every detection task shares
    (:func:`syngrpo.perception.answers.parse_detections`: ``<answer>`` tags, code fences,
    prose around the list, a single bare object, numbers as strings, box corners
    in either order), plus a label's case and spacing.  Unusable objects (no box
    of four numbers, no label) are dropped; a list that had objects but none
    usable is unreadable.  A missing or non-numeric rotation becomes ``None``.
    The prompt offers no "None" answer, so ``None``/``null`` is unreadable, not an empty room.
    """
    found = parse_detections(text, numbers=("rotation",), none_answers=())
    if found is None:
        return None
    objects = [obj for obj in map(_normal_form, found) if obj is not None]
    return objects if objects or not found else None


def map_objects(objects: Sequence[Mapping[str, Any]], transform: ImageTransform, *,
                drop_vanished: bool = True) -> list[dict[str, Any]]:
    """Objects after the image went through ``transform``: boxes mapped (and clipped), rotations turned.

    Boxes move as in :func:`syngrpo.perception.detection.map_detections` (``drop_vanished``:
    an object whose box had an area and has none left is dropped).
    """
    moved = map_detections(objects, transform, drop_vanished=drop_vanished)
    for obj in moved:
        if "rotation" in obj:
            obj["rotation"] = transform_rotation(obj["rotation"], transform)
    return moved


class IsrTask(Task):
    """Top-view indoor scenes: detect furniture with box, label and rotation.

    Options (``task_options`` in a config):
    ``classes`` the label vocabulary named in the prompt (default: the toy furniture);
    ``drop_unknown_labels`` drop predicted labels absent from the image's labels before mAP
    (VLM-R1's OVD convention; default False, so hallucinated classes cost precision);
    ``rotation_symmetry`` label -> order of its top-view symmetry for S_rotation
    (e.g. ``{"table": 2}``; default 1 for all, rotations compared modulo 360).
    """

    name: ClassVar[str] = "isr"
    answer_format: ClassVar[str] = (
        'a JSON list of objects: [{"bbox_2d": [x1, y1, x2, y2], "label": "bed", "rotation": 90}, ...]'
    )

    def __init__(self, *, classes: Sequence[str] | None = None, drop_unknown_labels: bool = False,
                 rotation_symmetry: Mapping[str, int] | None = None) -> None:
        self.classes = [normalize_label(c) for c in (classes if classes is not None else FURNITURE)]
        self.drop_unknown_labels = bool(drop_unknown_labels)
        self.rotation_symmetry = {normalize_label(k): int(v) for k, v in (rotation_symmetry or {}).items()}
        bad = {k: v for k, v in self.rotation_symmetry.items() if v < 1}
        if bad:
            raise ValueError(f"rotation_symmetry orders must be positive integers, got {bad}")

    # ---- data -------------------------------------------------------------------------
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a JSON list or JSONL file of records (format in docs/tasks/isr.md)."""
        path = Path(path)
        root = Path(image_root) if image_root is not None else path.parent
        return build_samples(path, read_records(path), lambda i, r: self._sample_from_record(r, root, f"{path.stem}-{i}"))

    def _sample_from_record(self, record: dict[str, Any], root: Path, default_id: str) -> Sample:
        where = f"ISR record {record.get('id', default_id)!r}"
        if "image" not in record:
            raise ValueError(f"{where} has no 'image'")
        objects = record.get("objects", record.get("solution"))
        if not isinstance(objects, list):
            raise ValueError(f"{where} needs a list 'objects'")
        for obj in objects:
            if not (isinstance(obj, dict) and valid_box(obj.get("bbox_2d")) and isinstance(obj.get("label"), str)):
                raise ValueError(f"{where} has a bad object: {obj!r}")
        image = resolve_image(record["image"], root)
        width, height = record.get("width"), record.get("height")
        if not width or not height:
            width, height = image_size(image)
        sample = Sample(
            id=str(record.get("id", default_id)),
            task=self.name,
            image=image,
            problem=record.get("problem") or "",
            solution=objects,
            width=int(width),
            height=int(height),
            source_id=record.get("source_id"),
            generation=int(record.get("generation", 0)),
            description=record.get("description"),
            meta={k: v for k, v in record.items() if k not in _RECORD_KEYS},
        )
        if not sample.problem:
            sample.problem = self.question(sample)
        return sample

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write JSONL (a JSON list for ``.json``); image paths relative to the file where possible."""
        meta_only = [s.evolve(meta={k: v for k, v in s.meta.items() if k not in _RECORD_KEYS}) for s in samples]
        write_records([sample_record(s, path, {"problem": s.problem, "objects": s.solution}) for s in meta_only], path)

    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, **options: Any) -> list[Sample]:
        """Procedural top-view rooms (:mod:`tasks_isr.toy`), written with ``<split>.jsonl``.

        Options: ``min_objects`` (2), ``max_objects`` (5), ``rotation`` ("right": multiples of
        90 degrees, "any": whole degrees, "mixed": 70 % right angles), ``classes`` (subset of the toy
        furniture).  The split is part of the seed, so train and test never share a room.
        """
        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"isr-toy:{split}:{seed}")
        samples = []
        for i in range(n):
            img, objects, floor = make_room(rng, image_size, **options)
            image = os.path.abspath(out / "images" / f"isr_{split}_{i:05d}.png")
            img.save(image)
            sample = Sample(id=f"isr-{split}-{seed}-{i:05d}", task=self.name, image=image, problem="",
                            solution=objects, width=image_size, height=image_size,
                            meta={"floor_box": floor, "generator": "tasks_isr.toy"})
            sample.problem = self.question(sample)
            samples.append(sample)
        self.save(samples, out / f"{split}.jsonl")
        return samples

    # ---- prompting and answers --------------------------------------------------------
    def question(self, sample: Sample) -> str:
        if sample.problem:
            return sample.problem
        classes = ", ".join(self.classes)
        return (
            f"This is a top-view rendering of a room ({sample.width}x{sample.height} pixels). "
            f"Detect every piece of furniture. For each one give its bounding box bbox_2d [x1, y1, x2, y2] "
            f"in pixels, its label (one of: {classes}) and its rotation in degrees from 0 to 360, clockwise, "
            f"0 meaning its front faces the bottom of the image. Answer with {self.answer_format}."
        )

    def parse_answer(self, text: str | None) -> list[dict[str, Any]] | None:
        return parse_objects(text)

    def format_answer(self, solution: Sequence[Mapping[str, Any]]) -> str:
        """A label written in the answer format (SFT targets, tests): the JSON list of objects."""
        return json.dumps([{"bbox_2d": list(o["bbox_2d"]), "label": o["label"], "rotation": o.get("rotation")}
                           for o in solution])

    @staticmethod
    def _ground_truth(sample: Sample) -> list[dict[str, Any]]:
        return list(sample.solution)

    @staticmethod
    def _to_original_frame(prediction: Any, sample: Sample, frame: ImageTransform | None) -> list[dict[str, Any]]:
        """Clean objects (re-checked, so any list is safe) mapped back to the original image; [] if unusable.

        As in OVD (R^isr_acc = R^ovd_acc), boxes are clipped to the image and a box
        outside it is kept: it is still a prediction (N_pred of eq. 3, a false positive).
        """
        if not isinstance(prediction, list):
            return []
        objects = [o for o in map(_parse_object, prediction) if o is not None]
        try:
            back = original_frame(sample, frame)
        except ValueError:  # a frame with a zero scale has no inverse
            return []
        return map_objects(objects, back, drop_vanished=False)

    def accuracy(self, prediction: Any | None, sample: Sample, *, frame: ImageTransform | None = None) -> float:
        """Eq. 3 (R^isr_acc = R^ovd_acc): ``min(1, N_gt/N_pred) * mAP``; rotations do not count here."""
        if not isinstance(prediction, list):
            return 0.0
        preds = self._to_original_frame(prediction, sample, frame)
        if prediction and not preds:
            return 0.0  # objects were claimed but none is usable
        value = ovd_reward(self._ground_truth(sample), preds, drop_unknown_labels=self.drop_unknown_labels)
        return min(1.0, max(0.0, float(value)))

    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """``{"map", "gp", "gr", "matched_iou", "matched_rotation"}`` of a split (docs/tasks/isr.md).

        ``map`` is COCO AP@[.5:.95] over the split; GP/GR pool the greedy IoU>=0.5
        label-matched pairs of all images (:func:`syngrpo.perception.detection.precision_recall_dataset`);
        ``matched_iou`` / ``matched_rotation`` (the quality of the matched pairs, conditional on
        detection; not the refinement stage's S_bbox / S_rotation, which the ``isr_refine`` task
        reports) are defined in :mod:`tasks_isr.metrics`.  An unreadable prediction counts as no objects.
        """
        frames = split_frames(predictions, samples, frames)
        gts = [self._ground_truth(s) for s in samples]
        preds = [self._to_original_frame(p, s, f) for p, s, f in zip(predictions, samples, frames, strict=True)]
        gp, gr = precision_recall_dataset(gts, preds, 0.5)
        pairs = matched_pair_scores(gts, preds, symmetry=self.rotation_symmetry)
        return {
            "map": float(coco_ap_dataset(gts, preds, drop_unknown_labels=self.drop_unknown_labels)),
            "gp": float(gp),
            "gr": float(gr),
            "matched_iou": pairs["matched_iou"],
            "matched_rotation": pairs["matched_rotation"],
        }

    # ---- labels under image transforms -----------------------------------------------
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        return [tuple(float(v) for v in o["bbox_2d"]) for o in sample.solution]  # type: ignore[misc]

    def transform_solution(self, solution: Any, transform: ImageTransform) -> Any:
        """Boxes mapped and clipped; rotation unchanged under uniform scale / translation.

        A non-uniform resize turns the rotation to the direction of the resized
        facing vector (exact for multiples of 90 degrees, which stay put); a
        mirror flips it; objects cropped away are dropped.
        """
        return map_objects(solution, transform)

    def class_names(self) -> list[str]:
        return list(self.classes)
