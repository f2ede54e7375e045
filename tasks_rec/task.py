"""REC: referring expression comprehension (paper §3.3.1, eq. 2; VLM-R1's REC task).

The model reads a referring expression ("the red circle on the left") and answers
one box ``[x1, y1, x2, y2]`` in pixels of the image it saw.  The accuracy reward
is the IoU of that box, mapped back to the original image frame, with the label
(eq. 2); the split metric is Acc@0.5, the share of answers with IoU > 0.5.

Formats, prompts and metrics are documented in docs/tasks/rec.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import (
    located_records,
    pop_image_size,
    resolve_images,
    tidy_number,
    write_records,
)
from syngrpo.data.formats import build_each
from syngrpo.perception.answers import as_box, find_box, json_values, unwrap
from syngrpo.perception.geometry import ImageTransform, iou
from syngrpo.perception.task import Task, original_frame, sample_record, split_frames
from syngrpo.perception.toyshapes import SHAPES
from syngrpo.perception.vlmr1 import answer_blocks, check_profile, rec_box, rec_iou, unclipped_box
from syngrpo.types import Box, Sample
from tasks_rec.chance import CHANCE_LABELS, chance_baselines
from tasks_rec.toy import make_rec_multi_image_toy, make_rec_toy

#: record keys holding a referring expression, in order of preference
EXPRESSION_KEYS = ("normal_caption", "expression", "referring_expression", "ref", "sentence", "caption")
#: record keys holding a whole question, used verbatim when no expression key exists
QUESTION_KEYS = ("problem", "question")
#: record keys holding the box
SOLUTION_KEYS = ("solution", "bbox_2d", "bbox", "box")
IMAGE_KEYS = ("image", "image_path", "img_path", "file_name")
ID_KEYS = ("id", "question_id", "sample_id")
#: keys of the dict forms of an answer
BOX_KEYS = ("bbox_2d", "bbox", "box", "bounding_box")

ANSWER_SENTENCE = "Output the bounding box as [x1, y1, x2, y2] in pixels."
DEFAULT_TEMPLATE = "Locate {expression} in the image. " + ANSWER_SENTENCE
#: the default question of a sample of several images: the expression names the image ("... in the second image")
MULTI_IMAGE_TEMPLATE = "Locate {expression}. Output the bounding box as [x1, y1, x2, y2] in pixels of that image."

#: meta flag: ``problem`` is a whole question from the dataset, not an expression
VERBATIM_FLAG = "problem_is_question"


def _box_in(value: Any, depth: int = 0) -> Box | None:
    """The first box in a parsed JSON value: a 4-list, a dict with a box key, or inside a list."""
    box = as_box(value)
    if box is not None or depth > 2:
        return box
    if isinstance(value, dict):
        for key in BOX_KEYS:
            if key in value:
                found = _box_in(value[key], depth + 1)
                if found is not None:
                    return found
        return None
    if isinstance(value, list):
        for item in value[:50]:
            found = _box_in(item, depth + 1)
            if found is not None:
                return found
    return None


def parse_box(text: str | None) -> Box | None:
    """The first box in an answer text, or ``None``. Never raises.

    Accepted: ``[x1, y1, x2, y2]`` with ints or floats, as JSON or as a bare
    list (also in parentheses or without brackets), ``{"bbox_2d": [...]}``, a list
    of such objects (the first box counts), all optionally inside ``<answer>``
    tags and/or a fenced code block; prose around the box is ignored.  Corners
    may come in either order.
    """
    if not isinstance(text, str):
        return None
    s = unwrap(text)
    if not s:
        return None
    for value in json_values(s):
        box = _box_in(value)
        if box is not None:
            return box
    return find_box(s)


def format_box(box: Sequence[float]) -> str:
    """The answer text of a box: ``[x1, y1, x2, y2]`` (integers where they are whole)."""
    return "[" + ", ".join(str(tidy_number(float(v))) for v in box) + "]"


def _box_image(images: list[str], index: Any) -> tuple[str, tuple[str, ...], int]:
    """``(box image, the other images, its index)`` of a record's images and its ``box_image`` field.

    One image needs no index; several need ``box_image``, the 0-based index of the image the box is in
    (a box is in one image's pixels, and guessing which would train on wrong labels)."""
    if len(images) == 1:
        if index not in (None, 0):
            raise ValueError(f"box_image is {index!r} but the record has one image; drop box_image or list the images")
        return images[0], (), 0
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(images):
        what = "no box_image field" if index is None else f"box_image {index!r}"
        raise ValueError(f"the record lists {len(images)} images and has {what}; add 'box_image': the 0-based "
                         f"index (0..{len(images) - 1}) of the image whose pixels the box is in")
    return images[index], (*images[:index], *images[index + 1 :]), index


def _box_problem(key: str | None, turns: list[Any], raw: Any, box_format: str) -> str:
    """Why a record's box cannot be read, and how to write it."""
    how = ("write it as [x1, y1, x2, y2] in pixels of the image" if box_format == "xyxy" else
           "write it as [x, y, w, h] in pixels (task_options box_format: xywh)")
    if key is None and not turns:
        return f"no box; add 'solution' ({', '.join(SOLUTION_KEYS)} are read) and {how}"
    field = f"field {key!r}" if key else "the second turn of 'conversations'"
    what = "is empty" if raw in (None, "", [], {}) else f"holds no readable box ({str(raw)[:120]!r})"
    return f"the box in {field} {what}; {how}"


class RecTask(Task):
    """Referring expression comprehension: one box per expression; reward IoU (eq. 2).

    Options (``task_options`` in a config):
    ``question_template`` with ``{expression}`` (default: :data:`DEFAULT_TEMPLATE`);
    ``box_format`` of the dataset boxes, ``"xyxy"`` (VLM-R1 files, default) or
    ``"xywh"`` (raw RefCOCO annotations), converted to ``xyxy`` on load;
    ``profile``, ``"default"`` (forgiving parsing, IoU of the clipped box) or ``"vlmr1"``
    (VLM-R1's rules, :mod:`syngrpo.perception.vlmr1`: first answer block, integers-only box,
    inclusive-pixel IoU, no clipping), for the reward and ``syngrpo eval`` alike.
    """

    name: ClassVar[str] = "rec"
    answer_format: ClassVar[str] = "[x1, y1, x2, y2]"
    chance_baseline_labels: ClassVar[dict[str, str]] = CHANCE_LABELS

    def __init__(self, *, question_template: str = DEFAULT_TEMPLATE, box_format: str = "xyxy",
                 profile: str = "default") -> None:
        self.profile = check_profile(profile)
        if "{expression}" not in question_template:
            raise ValueError("question_template must contain {expression}")
        if box_format not in ("xyxy", "xywh"):
            raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
        self.question_template = question_template
        self.box_format = box_format

    # ---- data -------------------------------------------------------------------------
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a JSON list or JSONL file of REC records (fields in docs/tasks/rec.md)."""
        path = Path(path)
        base = Path(image_root) if image_root is not None else path.parent
        return build_each(located_records(path), lambda i, r: self._from_record(r, base, f"{path.stem}-{i}"),
                          what=f"REC data {path}", image_base=base)

    def _from_record(self, record: dict[str, Any], base: Path, default_id: str) -> Sample:
        """One record as a sample; a ``ValueError`` says what is wrong and what to write instead."""
        rec = dict(record)
        conversations = rec.get("conversations") if isinstance(rec.get("conversations"), list) else None

        image_key = next((k for k in IMAGE_KEYS if k in rec), None)
        if image_key is None:
            raise ValueError(f"no image field; add one of {', '.join(IMAGE_KEYS)} (a path, or a list of paths)")
        image, others, box_image = _box_image(resolve_images(rec.pop(image_key), base), rec.pop("box_image", None))

        sol_key = next((k for k in SOLUTION_KEYS if k in rec), None)
        turns = [t for t in conversations if isinstance(t, dict)] if conversations else []
        raw = rec.pop(sol_key) if sol_key else (turns[1].get("value") if len(turns) > 1 else None)
        box = self._label_box(raw)
        if box is None:
            raise ValueError(_box_problem(sol_key, turns, raw, self.box_format))

        verbatim = False
        expr_key = next((k for k in EXPRESSION_KEYS if isinstance(rec.get(k), str)), None)
        if expr_key is not None:
            problem = rec.pop(expr_key)
        else:
            q_key = next((k for k in QUESTION_KEYS if isinstance(rec.get(k), str)), None)
            if q_key is not None:
                problem = rec.pop(q_key)
            elif turns and isinstance(turns[0].get("value"), str):
                problem = turns[0]["value"].replace("<image>", "").strip()
            else:
                raise ValueError(f"no referring expression; add one of {', '.join(EXPRESSION_KEYS + QUESTION_KEYS)}")
            verbatim = True
        if verbatim:
            rec[VERBATIM_FLAG] = True
        else:
            rec.pop(VERBATIM_FLAG, None)

        width, height = pop_image_size(rec, image)
        id_key = next((k for k in ID_KEYS if k in rec), None)
        sample_id = str(rec.pop(id_key)) if id_key else default_id
        return Sample(
            id=sample_id, task=self.name, image=image, problem=problem,
            solution=[float(v) for v in box], width=width, height=height,
            source_id=rec.pop("source_id", None), generation=int(rec.pop("generation", 0) or 0),
            description=rec.pop("description", None), meta=rec, other_images=others, box_image=box_image,
        )

    def _label_box(self, raw: Any) -> Box | None:
        """The dataset's box in ``xyxy``, converted from ``xywh`` when the task was told so."""
        if self.box_format == "xyxy":
            return parse_box(raw) if isinstance(raw, str) else as_box(raw)
        values = raw if not isinstance(raw, str) else next(
            (v for v in json_values(unwrap(raw)) if isinstance(v, list)), None)
        if not isinstance(values, (list, tuple)) or len(values) != 4 or as_box(values) is None:
            return None
        x, y, w, h = (float(v) for v in values)
        return as_box([x, y, x + w, y + h])

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write samples as JSONL (a JSON list for ``.json``) that :meth:`load` reads back (expression as ``normal_caption``)."""
        write_records([sample_record(s, path, {
            "problem" if s.meta.get(VERBATIM_FLAG) else "normal_caption": s.problem,
            "solution": [tidy_number(float(v)) for v in s.solution],
        }) for s in samples], path)

    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, **options: Any) -> list[Sample]:
        """Coloured shapes with one referring expression each (see :func:`tasks_rec.toy.make_rec_toy`);
        ``images_per_sample=2`` (to 4) shows that many scenes per sample and names the target's image
        (:func:`tasks_rec.toy.make_rec_multi_image_toy`, the worked example of several images)."""
        if int(options.get("images_per_sample", 1)) > 1:
            samples = make_rec_multi_image_toy(out_dir, n=n, seed=seed, split=split, image_size=image_size, **options)
        else:
            options.pop("images_per_sample", None)
            samples = make_rec_toy(out_dir, n=n, seed=seed, split=split, image_size=image_size, **options)
        samples = [s.evolve(task=self.name) for s in samples]  # a subclass may rename the task
        self.save(samples, Path(out_dir) / f"{split}.jsonl")
        return samples

    def chance_baselines(self, eval_samples: Sequence[Sample], train_samples: Sequence[Sample]) -> dict[str, float]:
        """Acc@0.5 of answers that need no model, on toy REC scenes (:mod:`tasks_rec.chance`); ``{}`` otherwise."""
        return chance_baselines(eval_samples, train_samples)

    # ---- prompting and answers --------------------------------------------------------
    def question(self, sample: Sample) -> str:
        if sample.meta.get(VERBATIM_FLAG):
            return f"{sample.problem.strip()} {ANSWER_SENTENCE}"
        if sample.other_images and self.question_template == DEFAULT_TEMPLATE:  # "in the image" would be ambiguous
            return MULTI_IMAGE_TEMPLATE.format(expression=sample.problem.strip())
        return self.question_template.format(expression=sample.problem.strip())

    def answer_text(self, response: Any, *, whole_text_fallback: bool = False) -> str | None:
        """vlmr1: the first ``<answer>`` block of the raw completion, never the whole text."""
        if self.profile == "vlmr1":
            blocks = answer_blocks(getattr(response, "text", None))
            return blocks[0] if blocks else None
        return super().answer_text(response, whole_text_fallback=whole_text_fallback)

    def parse_answer(self, text: str | None) -> Box | None:
        """The first box in the answer (:func:`parse_box`; vlmr1: :func:`~syngrpo.perception.vlmr1.rec_box`),
        or ``None``. Never raises."""
        if self.profile == "vlmr1":
            box = rec_box(text)
            return None if box is None else tuple(float(v) for v in box)  # type: ignore[return-value]
        return parse_box(text)

    def format_answer(self, solution: Any) -> str:
        """The reference answer text of a label (tests and SFT warm starts use it).

        vlmr1 accepts integers only, so the box is rounded to whole pixels there.
        """
        if self.profile == "vlmr1":
            return "[" + ", ".join(str(round(float(v))) for v in solution) + "]"
        return format_box(solution)

    def accuracy(self, prediction: Any | None, sample: Sample, *, frame: ImageTransform | None = None) -> float:
        """IoU of the predicted box with the label, eq. 2 of Syn-GRPO; in [0, 1]. Never raises.

        The prediction is in the model-input frame; ``frame.inverse`` maps it to the
        original image, where it is clipped to the image before the IoU.
        """
        if self.profile == "vlmr1":
            return self._vlmr1_accuracy(prediction, sample, frame)
        box = as_box(list(prediction)) if isinstance(prediction, (list, tuple)) else None
        gt = as_box(sample.solution) if isinstance(sample.solution, (list, tuple)) else None
        if box is None or gt is None:
            return 0.0
        try:
            back = original_frame(sample, frame)
        except ValueError:
            return 0.0
        value = iou(gt, back.box(box))
        return value if math.isfinite(value) else 0.0

    @staticmethod
    def _vlmr1_accuracy(prediction: Any, sample: Sample, frame: ImageTransform | None) -> float:
        """VLM-R1's IoU of the box mapped to the original frame, neither clipped nor reordered."""
        if not isinstance(prediction, (list, tuple)) or len(prediction) != 4:
            return 0.0
        try:
            back = original_frame(sample, frame)
            box = unclipped_box(prediction, back)
            gt = [float(v) for v in sample.solution]
        except (ValueError, TypeError, OverflowError):
            return 0.0
        return rec_iou(box, gt)

    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """``acc@0.5``: share of predictions with IoU > 0.5 (strictly); ``mean_iou``: mean IoU.

        The IoU is the profile's (:meth:`accuracy`), so vlmr1 evaluates as VLM-R1 does.

        An unreadable prediction (``None``) counts as IoU 0.  An empty split gives 0.0.
        """
        ious = [self.accuracy(p, s, frame=f)
                for p, s, f in zip(predictions, samples, split_frames(predictions, samples, frames), strict=True)]
        if not ious:
            return {"acc@0.5": 0.0, "mean_iou": 0.0}
        return {"acc@0.5": sum(v > 0.5 for v in ious) / len(ious), "mean_iou": sum(ious) / len(ious)}

    # ---- labels under image transforms -----------------------------------------------
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        """Every drawn object for toy samples (a relation needs its twin), else the target box."""
        objects = sample.meta.get("objects")
        if isinstance(objects, list) and objects:
            boxes = [as_box(o.get("bbox_2d")) for o in objects if isinstance(o, dict)]
            if boxes and all(b is not None for b in boxes):
                return boxes  # type: ignore[return-value]
        box = as_box(sample.solution)
        return [box] if box is not None else []

    def foreground_labels(self, sample: Sample) -> list[str]:
        """Each toy object's own label ("red circle"); for one target box, the referring expression."""
        objects = sample.meta.get("objects")
        boxes = self.foreground_boxes(sample)
        if isinstance(objects, list) and len(objects) == len(boxes) and all(
                isinstance(o, dict) and o.get("label") for o in objects):
            return [str(o["label"]) for o in objects]
        return [sample.problem] * len(boxes)

    def transform_solution(self, solution: Any, transform: ImageTransform) -> list[float]:
        """The box after the image went through ``transform`` (clipped to the new frame)."""
        return [float(v) for v in transform.box(solution)]

    def transform_sample(self, sample: Sample, transform: ImageTransform, image_path: str) -> Sample:
        """Also moves the boxes of the toy objects kept in ``meta["objects"]``."""
        moved = super().transform_sample(sample, transform, image_path)
        objects = sample.meta.get("objects")
        if isinstance(objects, list):
            meta = dict(moved.meta)
            meta["objects"] = [
                {**o, "bbox_2d": [float(v) for v in transform.box(o["bbox_2d"])]}
                if isinstance(o, dict) and as_box(o.get("bbox_2d")) is not None else o
                for o in objects
            ]
            moved = moved.evolve(meta=meta)
        return moved

    def class_names(self) -> list[str]:
        """The toy generator's shapes (REC datasets carry expressions, not classes)."""
        return list(SHAPES)
