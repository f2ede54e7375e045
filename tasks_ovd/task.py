"""OVD: open-vocabulary object detection (paper §3.3.1, eq. 3; VLM-R1's OVD task).

The prompt names the categories to look for; the model answers a JSON list of
``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` objects in pixels of the image it
saw, or ``None``.  The accuracy reward is ``min(1, N_gt/N_pred) * mAP`` (eq. 3)
with COCO's AP@[.5:.95], after the boxes are mapped back to the original image;
the split metrics are mAP, GP and GR (:mod:`syngrpo.perception.detection`).

Formats, prompts and metrics are documented in docs/tasks/ovd.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import (
    located_records,
    pop_image_size,
    resolve_image,
    tidy_number,
    write_records,
)
from syngrpo.data.formats import build_each
from syngrpo.perception import vlmr1
from syngrpo.perception.answers import BOX_KEYS, LABEL_KEYS, NONE_ANSWERS, parse_detections, to_detection
from syngrpo.perception.coco_group import ovd_reward_batch, ovd_reward_group
from syngrpo.perception.detection import coco_ap_dataset, map_detections, ovd_reward, precision_recall_dataset
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.task import Task, original_frame, sample_record, split_frames
from syngrpo.perception.toyshapes import SHAPES
from syngrpo.types import Box, Sample
from tasks_ovd.toy import make_ovd_toy

# The answer parser is the one every detection task shares (syngrpo.perception.answers); re-exported here.
__all__ = ["BOX_KEYS", "LABEL_KEYS", "NONE_ANSWERS", "OvdTask", "format_detections", "parse_detections",
           "to_detection"]

IMAGE_KEYS = ("image", "image_path", "img_path", "file_name")
ID_KEYS = ("id", "question_id", "sample_id")
SOLUTION_KEYS = ("solution", "objects", "detections")
QUESTION_KEYS = ("problem", "question")
#: record keys listing the categories to detect (a list, or one comma-separated string)
CATEGORY_KEYS = ("categories", "labels", "classes", "category_names")

DEFAULT_TEMPLATE = (
    "Detect every object of these categories in the image: {categories}. "
    'Output a JSON list with one {{"bbox_2d": [x1, y1, x2, y2], "label": category}} per object, '
    "with the box in pixels, or None if there is no such object."
)

#: the default question of the vlmr1 profile, which reads a ```json fence only, so it asks for one
VLMR1_TEMPLATE = (
    "Detect every object of these categories in the image: {categories}. "
    'Output a JSON list with one {{"bbox_2d": [x1, y1, x2, y2], "label": category}} per object, '
    "with the box in pixels, inside a ```json code block, or None if there is no such object."
)


def format_detections(objects: Sequence[Mapping[str, Any]]) -> str:
    """The answer text of a label list: JSON objects, or ``None`` when it is empty."""
    if not objects:
        return "None"
    return json.dumps([{"bbox_2d": [tidy_number(float(v)) for v in o["bbox_2d"]], "label": o["label"]}
                       for o in objects])


def _split_categories(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return None
    names = [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return list(dict.fromkeys(names))


class OvdTask(Task):
    """Open-vocabulary detection; reward min(1, N_gt/N_pred) * mAP (eq. 3); metrics mAP, GP, GR.

    Options (``task_options`` in a config):
    ``drop_unknown_labels`` (default False): when True, predictions whose label is
    absent from the ground truth are dropped before the AP, as VLM-R1 does; by
    default they are false positives (docs/tasks/ovd.md);
    ``question_template`` with ``{categories}`` (default :data:`DEFAULT_TEMPLATE`);
    ``profile``, ``"default"`` or ``"vlmr1"`` (VLM-R1's rules, :mod:`syngrpo.perception.vlmr1`: last
    answer block, last json fence, labels compared exactly, unknown labels always dropped but
    counted in N_pred, no clipping), for the reward and ``syngrpo eval`` alike.
    """

    name: ClassVar[str] = "ovd"
    answer_format: ClassVar[str] = '[{"bbox_2d": [x1, y1, x2, y2], "label": "category"}, ...] or None'

    def __init__(self, *, drop_unknown_labels: bool = False, question_template: str = DEFAULT_TEMPLATE,
                 profile: str = "default") -> None:
        self.profile = vlmr1.check_profile(profile)
        if self.profile == "vlmr1" and question_template == DEFAULT_TEMPLATE:
            question_template = VLMR1_TEMPLATE
        if "{categories}" not in question_template:
            raise ValueError("question_template must contain {categories}")
        self.drop_unknown_labels = bool(drop_unknown_labels)
        self.question_template = question_template
        self._seen_labels: dict[str, None] = {}

    # ---- data -------------------------------------------------------------------------
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a JSON list or JSONL file of OVD records (fields in docs/tasks/ovd.md)."""
        path = Path(path)
        base = Path(image_root) if image_root is not None else path.parent
        samples = build_each(located_records(path), lambda i, r: self._from_record(r, base, f"{path.stem}-{i}"),
                             what=f"OVD data {path}", image_base=base)
        self._remember(samples)
        return samples

    def _from_record(self, record: dict[str, Any], base: Path, default_id: str) -> Sample:
        """One record as a sample; a ``ValueError`` says what is wrong and what to write instead."""
        rec = dict(record)
        turns = [t for t in rec.get("conversations", []) if isinstance(t, dict)] \
            if isinstance(rec.get("conversations"), list) else []
        image_key = next((k for k in IMAGE_KEYS if k in rec), None)
        if image_key is None:
            raise ValueError(f"no image field; add one of {', '.join(IMAGE_KEYS)} (a path, or a list of paths)")
        image = resolve_image(rec.pop(image_key), base)

        sol_key = next((k for k in SOLUTION_KEYS if k in rec), None)
        raw = rec.pop(sol_key) if sol_key else (turns[1].get("value") if len(turns) > 1 else None)
        objects = self._label_objects(raw)

        cat_key = next((k for k in CATEGORY_KEYS if k in rec), None)
        categories = _split_categories(rec.pop(cat_key)) if cat_key else None
        q_key = next((k for k in QUESTION_KEYS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if q_key is not None:
            problem = rec.pop(q_key)
        elif turns and isinstance(turns[0].get("value"), str):
            problem = turns[0]["value"].replace("<image>", "").strip()
        else:
            problem = ""
        if categories is None:
            categories = list(dict.fromkeys(o["label"] for o in objects))
        if not problem and not categories:
            raise ValueError("no question, no categories and no objects: nothing says what to detect; add "
                             "'categories' (a list of names) or 'problem' (the question)")
        rec["categories"] = categories
        if not problem:
            problem = self.question_template.format(categories=", ".join(categories))

        width, height = pop_image_size(rec, image)
        id_key = next((k for k in ID_KEYS if k in rec), None)
        return Sample(
            id=str(rec.pop(id_key)) if id_key else default_id, task=self.name, image=image, problem=problem,
            solution=objects, width=width, height=height,
            source_id=rec.pop("source_id", None), generation=int(rec.pop("generation", 0) or 0),
            description=rec.pop("description", None), meta=rec,
        )

    @staticmethod
    def _label_objects(raw: Any) -> list[dict[str, Any]]:
        """The ground-truth objects of a record; every object must be readable."""
        if isinstance(raw, str):
            parsed = parse_detections(raw)
            if parsed is None:
                raise ValueError(f"cannot read the solution {raw[:200]!r}; write a JSON list of "
                                 '{"bbox_2d": [x1, y1, x2, y2], "label": NAME} objects (fenced or not), or None')
            return parsed
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ValueError(f"the solution is a {type(raw).__name__} ({str(raw)[:120]!r}); write a list of objects, "
                             "'None' or a JSON string of the list")
        objects = []
        for j, item in enumerate(raw):
            det = to_detection(item)
            if det is None:
                raise ValueError(f"object {j + 1} of the solution has no readable box and label ({str(item)[:120]!r}); "
                                 'write {"bbox_2d": [x1, y1, x2, y2], "label": NAME}')
            extra = {k: v for k, v in item.items() if k not in BOX_KEYS and k not in LABEL_KEYS and k != "score"}
            objects.append({**det, **extra})
        return objects

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write samples as JSONL (a JSON list for ``.json``) that :meth:`load` reads back."""
        write_records([sample_record(s, path, {
            "problem": s.problem,
            "solution": [{**o, "bbox_2d": [tidy_number(float(v)) for v in o["bbox_2d"]]} for o in s.solution],
        }) for s in samples], path)

    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, **options: Any) -> list[Sample]:
        """Coloured shapes, each labelled by its shape (see :func:`tasks_ovd.toy.make_ovd_toy`)."""
        samples = make_ovd_toy(out_dir, n=n, seed=seed, split=split, image_size=image_size,
                               question_template=self.question_template, **options)
        samples = [s.evolve(task=self.name) for s in samples]  # a subclass may rename the task
        self.save(samples, Path(out_dir) / f"{split}.jsonl")
        self._remember(samples)
        return samples

    def _remember(self, samples: Sequence[Sample]) -> None:
        for s in samples:
            for label in list(s.meta.get("categories") or []) + [o["label"] for o in s.solution]:
                self._seen_labels.setdefault(label, None)

    # ---- prompting and answers --------------------------------------------------------
    def question(self, sample: Sample) -> str:
        if sample.problem.strip():
            return sample.problem
        cats = sample.meta.get("categories") or list(dict.fromkeys(o["label"] for o in sample.solution))
        return self.question_template.format(categories=", ".join(cats))

    def answer_text(self, response: Any, *, whole_text_fallback: bool = False) -> str | None:
        """vlmr1: the *last* ``<answer>`` block of the raw completion, never the whole text."""
        if self.profile == "vlmr1":
            blocks = vlmr1.answer_blocks(getattr(response, "text", None))
            return blocks[-1] if blocks else None
        return super().answer_text(response, whole_text_fallback=whole_text_fallback)

    def parse_answer(self, text: str | None) -> list[Any] | None:
        """The detections in the answer (:func:`parse_detections`), or ``None``. Never raises.

        vlmr1: the raw items of the last json fence (:func:`~syngrpo.perception.vlmr1.json_fence_items`),
        ``[]`` without a fence or with invalid JSON; ``None`` only when there is no answer.
        """
        if self.profile == "vlmr1":
            return None if text is None else vlmr1.json_fence_items(text)
        return parse_detections(text)

    def format_answer(self, solution: Any) -> str:
        """The reference answer text of a label list (tests and SFT warm starts use it).

        vlmr1 reads a json fence only, so the list is written inside one there.
        """
        if self.profile == "vlmr1" and solution:
            return "```json\n" + format_detections(solution) + "\n```"
        return format_detections(solution)

    def _to_original_frame(self, prediction: Any, sample: Sample, frame: ImageTransform | None
                           ) -> list[dict[str, Any]] | None:
        """Clean detections mapped from the model-input frame to the original image (clipped)."""
        if not isinstance(prediction, list):
            return None
        clean = [d for d in map(to_detection, prediction) if d is not None]
        return map_detections(clean, original_frame(sample, frame), drop_vanished=False)

    def accuracy(self, prediction: Any | None, sample: Sample, *, frame: ImageTransform | None = None) -> float:
        """R_acc^ovd = min(1, N_gt/N_pred) * mAP, eq. 3 of Syn-GRPO, in the original frame. Never raises."""
        if self.profile == "vlmr1":
            if prediction is not None and not isinstance(prediction, list):
                return 0.0
            try:
                return vlmr1.ovd_reward(prediction, sample.solution, original_frame(sample, frame))
            except ValueError:
                return 0.0
        try:
            preds = self._to_original_frame(prediction, sample, frame)
        except ValueError:  # a frame with a zero scale has no inverse
            return 0.0
        if preds is None:
            return 0.0
        value = ovd_reward(sample.solution, preds, drop_unknown_labels=self.drop_unknown_labels)
        return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0

    def accuracy_group(self, predictions: Sequence[Any | None], sample: Sample, *,
                       frame: ImageTransform | None = None) -> list[float]:
        """:meth:`accuracy` of each of a GRPO group's predictions of one sample, in one AP pass.

        The G completions share the ground truth, so the COCO AP of all of them is computed in one
        call (:mod:`syngrpo.perception.coco_group`); the values equal :meth:`accuracy`'s.  AccuracyReward
        calls this for each group.  Never raises.  A subclass that overrides :meth:`accuracy` gets its
        own ``accuracy`` for each prediction here (the group path computes this class's).
        """
        if type(self).accuracy is not OvdTask.accuracy:
            return [self.accuracy(p, sample, frame=frame) for p in predictions]
        if self.profile == "vlmr1":
            try:
                back = original_frame(sample, frame)
            except ValueError:
                return [0.0] * len(predictions)
            items = [p if p is None or isinstance(p, list) else [] for p in predictions]
            values = vlmr1.ovd_reward_group(items, sample.solution, back)
            return [0.0 if p is not None and not isinstance(p, list) else v
                    for p, v in zip(predictions, values, strict=True)]
        try:
            preds = [self._to_original_frame(p, sample, frame) for p in predictions]
            values = ovd_reward_group(sample.solution, [p or [] for p in preds],
                                      drop_unknown_labels=self.drop_unknown_labels)
        except ValueError:
            return [self.accuracy(p, sample, frame=frame) for p in predictions]
        return [0.0 if p is None else (min(1.0, max(0.0, v)) if math.isfinite(v) else 0.0)
                for p, v in zip(preds, values, strict=True)]

    def accuracy_batch(self, groups: Sequence[tuple[Sequence[Any | None], Sample, ImageTransform | None]]
                       ) -> list[list[float]]:
        """:meth:`accuracy_group` of every ``(predictions, sample, frame)`` group of a batch, in one AP pass.

        The per-pass numpy overhead (~1 ms) is paid once per batch instead of once per group
        (:func:`~syngrpo.perception.coco_group.coco_ap_batch_arrays`); the values equal
        :meth:`accuracy_group`'s.  AccuracyReward calls this once per batch.  Never raises: a group
        that cannot join the pass is scored by :meth:`accuracy_group`.
        """
        if type(self).accuracy is not OvdTask.accuracy or type(self).accuracy_group is not OvdTask.accuracy_group:
            return [self.accuracy_group(p, s, frame=f) for p, s, f in groups]
        out: list[list[float] | None] = [None] * len(groups)
        joined, entries = [], []
        for j, (predictions, sample, frame) in enumerate(groups):
            try:
                back = original_frame(sample, frame)
                if self.profile == "vlmr1":
                    entries.append(([p if p is None or isinstance(p, list) else [] for p in predictions],
                                    sample.solution, back))
                else:
                    mapped = [self._to_original_frame(p, sample, frame) for p in predictions]
                    entries.append((sample.solution, [m or [] for m in mapped]))
                joined.append(j)
            except ValueError:  # a frame without an inverse: the group path knows what to do
                out[j] = self.accuracy_group(predictions, sample, frame=frame)
        try:
            if self.profile == "vlmr1":
                values = vlmr1.ovd_reward_batch(entries)
            else:
                values = ovd_reward_batch(entries, drop_unknown_labels=self.drop_unknown_labels)
        except (ValueError, TypeError, KeyError):  # a malformed sample: group by group, which falls back further
            values = [None] * len(joined)
        for j, v in zip(joined, values, strict=True):
            predictions, sample, frame = groups[j]
            if v is None:
                out[j] = self.accuracy_group(predictions, sample, frame=frame)
            elif self.profile == "vlmr1":
                out[j] = [0.0 if p is not None and not isinstance(p, list) else x for p, x in zip(predictions, v, strict=True)]
            else:
                out[j] = [0.0 if not isinstance(p, list) else (min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0)
                          for p, x in zip(predictions, v, strict=True)]
        return [v if v is not None else [] for v in out]

    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """``map``: COCO AP@[.5:.95] over the split; ``gp``/``gr``: greedy precision/recall at IoU 0.5.

        An unreadable prediction (``None``) counts as predicting nothing.  vlmr1: see
        :func:`~syngrpo.perception.vlmr1.ovd_dataset_metrics`.
        """
        if self.profile == "vlmr1":
            back = []
            for s, frame in zip(samples, split_frames(predictions, samples, frames), strict=True):
                try:
                    back.append(original_frame(s, frame))
                except ValueError:
                    back.append(None)
            items = [p if isinstance(p, list) and b is not None else [] for p, b in zip(predictions, back, strict=True)]
            return vlmr1.ovd_dataset_metrics(items, [s.solution for s in samples], back)
        preds = []
        for p, s, frame in zip(predictions, samples, split_frames(predictions, samples, frames), strict=True):
            try:
                mapped = self._to_original_frame(p, s, frame)
            except ValueError:
                mapped = None
            preds.append(mapped or [])
        gts = [s.solution for s in samples]
        gp, gr = precision_recall_dataset(gts, preds, 0.5)
        return {"map": coco_ap_dataset(gts, preds, drop_unknown_labels=self.drop_unknown_labels), "gp": gp, "gr": gr}

    # ---- labels under image transforms -----------------------------------------------
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        return [tuple(float(v) for v in o["bbox_2d"]) for o in sample.solution]  # type: ignore[misc]

    def transform_solution(self, solution: Any, transform: ImageTransform) -> list[dict[str, Any]]:
        """Objects after the image went through ``transform``; an object cropped away is dropped."""
        return map_detections(solution, transform)

    def class_names(self) -> list[str]:
        """Labels of the data this task loaded or generated; the toy shapes before any."""
        if self._seen_labels:
            return list(self._seen_labels)
        return list(SHAPES)
