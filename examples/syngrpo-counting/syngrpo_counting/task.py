"""CountingTask: "How many <shape>s are there?", answered with an integer.

A task none of syngrpo's built-in ones covers (REC answers one box, OVD/ISR a
list of boxes), written only against syngrpo's public API: the
:class:`syngrpo.perception.task.Task` contract, :class:`syngrpo.types.Sample`,
:class:`syngrpo.perception.geometry.ImageTransform`, the dataset-file helpers of
:mod:`syngrpo.data.files` and the toy drawing helpers of :mod:`syngrpo.perception.toyshapes`.

Data record (one JSON object per line)::

    {"id": "c-0", "image": "images/c_0.png", "width": 112, "height": 112,
     "shape": "square", "count": 3,
     "objects": [{"bbox_2d": [10, 12, 24, 26], "shape": "square"}, ...]}

``objects`` lists every drawn object, counted or not, so that the count can be
redone when a crop cuts objects away (:meth:`CountingTask.transform_sample`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.api import (
    Box,
    ImageTransform,
    Sample,
    Task,
    box_area,
    portable_image_path,
    read_records,
    resolve_image,
    valid_box,
    write_jsonl,
)

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()
)}
_INTEGER = re.compile(r"\+?(\d{1,6})(?:\.0*)?\.?")
_RECORD_KEYS = {"id", "image", "width", "height", "problem", "count", "source_id", "generation", "description"}

#: a cropped object still counts while at least this fraction of its box is inside the image
VISIBLE_FRACTION = 0.5


def parse_count(text: str | None) -> int | None:
    """The integer an answer states, or ``None``. Never raises.

    Accepted: the whole answer is a non-negative integer (``"3"``, ``" 3. "``,
    ``"3.0"``) or an English number word up to twenty (``"Three"``).  Anything
    else, prose included (``"there are 3"``), is unreadable: the prompt asks for
    the number alone, and a lenient parser would reward answers that hedge
    (``"3 or 4"``).
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    match = _INTEGER.fullmatch(s)
    if match:
        return int(match.group(1))
    return _NUMBER_WORDS.get(s.lower().rstrip("."))


def graded_score(predicted: int, target: int) -> float:
    """``1 - |p - t| / max(p, t)`` (1 when both are 0): partial credit that shrinks with the relative error."""
    top = max(predicted, target)
    return 1.0 if top == 0 else 1.0 - abs(predicted - target) / top


class CountingTask(Task):
    """Count the objects of one shape among distractors.

    Options: ``reward`` is ``"exact"`` (default: 1 for the right count, else 0)
    or ``"graded"`` (:func:`graded_score`, a denser signal for GRPO when exact
    hits are rare); ``evaluate`` always reports exact-match accuracy.
    """

    name: ClassVar[str] = "counting"
    answer_format: ClassVar[str] = "a single integer, e.g. 3"

    def __init__(self, *, reward: str = "exact", shapes: Sequence[str] = ("circle", "square", "triangle")) -> None:
        from syngrpo.api import SHAPES

        if reward not in ("exact", "graded"):
            raise ValueError(f"reward must be 'exact' or 'graded', got {reward!r}")
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {list(shapes)}")
        self.reward = reward
        self.shapes = list(shapes)

    # ---- data -------------------------------------------------------------------------
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a JSONL (or JSON list) file of counting records (module docstring)."""
        path = Path(path)
        root = Path(image_root) if image_root is not None else path.parent
        samples = []
        for i, r in enumerate(read_records(path)):
            count = r.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0 or "shape" not in r:
                raise ValueError(f"{path}: record {i} needs a 'shape' and a non-negative integer 'count'")
            sample = Sample(
                id=str(r.get("id", f"{path.stem}-{i}")), task=self.name, image=resolve_image(r["image"], root),
                problem=r.get("problem") or "", solution=count, width=int(r["width"]), height=int(r["height"]),
                source_id=r.get("source_id"), generation=int(r.get("generation", 0)),
                description=r.get("description"),
                meta={k: v for k, v in r.items() if k not in _RECORD_KEYS},
            )
            sample.problem = sample.problem or self.question(sample)
            samples.append(sample)
        return samples

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write JSONL, image paths relative to the file where they are below it."""
        records = []
        for s in samples:
            record = {**s.meta, "id": s.id, "image": portable_image_path(s.image, path), "width": s.width,
                      "height": s.height, "problem": s.problem, "count": s.solution}
            for key in ("source_id", "description"):
                if getattr(s, key) is not None:
                    record[key] = getattr(s, key)
            if s.generation:
                record["generation"] = s.generation
            records.append(record)
        write_jsonl(records, path)

    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, min_count: int = 1, max_count: int = 6,
                         max_distractors: int = 3, style: str = "plain", **options: Any) -> list[Sample]:
        """Pictures of 0-``max_distractors`` other shapes and ``min_count``-``max_count`` of the counted one.

        Drawn with :mod:`syngrpo.perception.toyshapes` (exact pixel boxes, no overlaps); written
        with ``<split>.jsonl`` next to the images.
        """
        if options:
            raise TypeError(f"unknown toy options for the counting task: {sorted(options)}")
        from syngrpo.api import COLOURS, ShapeSpec, place_boxes, render_scene, scene_rng

        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        samples = []
        for i in range(n):
            rng = scene_rng(seed, "counting", split, i)
            target = str(rng.choice(self.shapes))
            others = [s for s in self.shapes if s != target] or [target]
            count = int(rng.integers(min_count, max_count + 1))
            n_other = int(rng.integers(0, max_distractors + 1)) if others != [target] else 0
            kinds = [target] * count + [str(rng.choice(others)) for _ in range(n_other)]
            for attempt in range(20):  # shapes shrink a little at each failed layout
                lo, hi = max(5, image_size // (10 + attempt)), max(6, image_size // (6 + attempt))
                boxes = place_boxes(rng, [int(rng.integers(lo, hi)) for _ in kinds], image_size, image_size)
                if boxes is not None:
                    break
            else:
                raise ValueError(f"{len(kinds)} shapes do not fit a {image_size}px image")
            specs = [ShapeSpec(k, str(rng.choice(list(COLOURS))), b) for k, b in zip(kinds, boxes, strict=True)]
            image, drawn = render_scene(specs, image_size, image_size, rng, style=style)
            path = os.path.abspath(out / "images" / f"counting_{split}_{i:05d}.png")
            image.save(path)
            sample = Sample(
                id=f"counting-{split}-{seed}-{i:05d}", task=self.name, image=path, problem="",
                solution=count, width=image_size, height=image_size,
                meta={"shape": target, "objects": [{"bbox_2d": list(d.bbox), "shape": d.shape} for d in drawn]},
            )
            sample.problem = self.question(sample)
            samples.append(sample)
        self.save(samples, out / f"{split}.jsonl")
        return samples

    # ---- prompting and answers --------------------------------------------------------
    def question(self, sample: Sample) -> str:
        return sample.problem or f"How many {sample.meta['shape']}s are there? Answer with {self.answer_format}."

    def format_answer(self, solution: int) -> str:
        return str(int(solution))

    def parse_answer(self, text: str | None) -> int | None:
        return parse_count(text)

    def accuracy(self, prediction: Any | None, sample: Sample, *, frame: ImageTransform | None = None) -> float:
        """Exact match (or :func:`graded_score`); a count needs no frame mapping."""
        if isinstance(prediction, bool) or not isinstance(prediction, int) or prediction < 0:
            return 0.0
        target = int(sample.solution)
        if self.reward == "graded":
            return graded_score(prediction, target)
        return 1.0 if prediction == target else 0.0

    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """``{"accuracy"}``: the fraction of exactly right counts (unreadable answers are wrong)."""
        if len(predictions) != len(samples):
            raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
        if not samples:
            return {"accuracy": 0.0}
        right = sum(1 for p, s in zip(predictions, samples, strict=True)
                    if isinstance(p, int) and not isinstance(p, bool) and p == int(s.solution))
        return {"accuracy": right / len(samples)}

    # ---- labels under image transforms -----------------------------------------------
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        """The counted objects: synthesis keeps them pixel-exact and repaints the rest."""
        shape = sample.meta.get("shape")
        return [tuple(float(v) for v in o["bbox_2d"]) for o in sample.meta.get("objects", [])  # type: ignore[misc]
                if o.get("shape") == shape and valid_box(o.get("bbox_2d"))]

    def foreground_labels(self, sample: Sample) -> list[str]:
        """Each kept box is one counted shape: tell the data server the shape, not the whole question."""
        return [str(sample.meta.get("shape", "object"))] * len(self.foreground_boxes(sample))

    def transform_solution(self, solution: Any, transform: ImageTransform) -> Any:
        """A count does not change when the image is resized, padded or pasted; crops go through
        :meth:`transform_sample`, which can see the objects."""
        return solution

    def transform_sample(self, sample: Sample, transform: ImageTransform, image_path: str) -> Sample:
        """Move every object's box and count again: an object counts while half its box is still inside."""
        objects = []
        for o in sample.meta.get("objects", []):
            box = [float(v) for v in o["bbox_2d"]]
            moved = list(transform.box(box, clip=True))
            unclipped = transform.box(box, clip=False)
            if box_area(unclipped) > 0 and box_area(moved) >= VISIBLE_FRACTION * box_area(unclipped):
                objects.append({**o, "bbox_2d": moved})
        count = sum(1 for o in objects if o.get("shape") == sample.meta.get("shape"))
        return sample.evolve(image=image_path, solution=count, width=transform.width, height=transform.height,
                             meta={**sample.meta, "objects": objects})

    def class_names(self) -> list[str]:
        """None: a synthesizer drawing the task's shapes as distractors would change the count."""
        return []
