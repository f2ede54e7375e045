"""The OVD toy generator: coloured shapes labelled by their shape.

Each image holds ``n_objects`` shapes (several of a class may appear, in any
colour).  The prompt lists the classes present plus ``n_absent`` classes that are
not (as D3 asks for categories an image may lack), so answering "every class in
the prompt" is wrong.  Every box is the exact box of the shape's painted pixels;
each object also records its ``colour`` (ignored by the metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from syngrpo.perception.toyshapes import COLOURS, SHAPES, ShapeSpec, place_boxes, render_scene, scene_rng
from syngrpo.types import Sample


def make_ovd_toy(out_dir: str | Path, *, n: int, seed: int, split: str = "train", image_size: int = 112,
                 style: str = "plain", n_objects: tuple[int, int] = (2, 5), n_absent: tuple[int, int] = (0, 2),
                 shapes: Sequence[str] = SHAPES, colours: Sequence[str] = tuple(COLOURS),
                 question_template: str) -> list[Sample]:
    """Draw ``n`` OVD images into ``out_dir/images`` and return their samples (paths absolute).

    ``style`` as in :func:`tasks_rec.toy.make_rec_toy` (``"ood"`` for the
    out-of-domain split).  Image ``i`` depends only on ``(seed, split, i)``.  ``question_template``
    (with ``{categories}``) is the task's: :meth:`tasks_ovd.task.OvdTask.make_toy_dataset` passes its own.
    """
    template = question_template
    lo, hi = int(n_objects[0]), int(n_objects[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"n_objects must be (min, max) with 1 <= min <= max, got {n_objects!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    size = int(image_size)
    min_side, max_side = max(8, round(size * 0.12)), max(9, round(size * 0.26))
    samples = []
    for i in range(n):
        rng = scene_rng(seed, "ovd", split, i)
        k = int(rng.integers(lo, hi + 1))
        while True:
            boxes = place_boxes(rng, rng.integers(min_side, max_side + 1, size=k), size, size,
                                gap=max(2, size // 40))
            if boxes is not None:
                break
            k = max(1, k - 1)
        specs = [ShapeSpec(str(rng.choice(shapes)), str(rng.choice(colours)), box) for box in boxes]
        image, drawn = render_scene(specs, size, size, scene_rng(seed, "ovd", split, i, "background"), style=style)

        present = sorted({d.shape for d in drawn})
        absent_pool = [s for s in shapes if s not in present]
        n_abs = min(len(absent_pool), int(rng.integers(int(n_absent[0]), int(n_absent[1]) + 1)))
        absent = [str(s) for s in rng.choice(absent_pool, size=n_abs, replace=False)] if n_abs else []
        categories = sorted(present + absent)

        sample_id = f"ovd-{split}-{i:05d}"
        path = out / "images" / f"{sample_id}.png"
        image.save(path)
        samples.append(Sample(
            id=sample_id, task="ovd", image=str(path.resolve()),
            problem=template.format(categories=", ".join(categories)),
            solution=[{"bbox_2d": [float(v) for v in d.bbox], "label": d.shape, "colour": d.colour} for d in drawn],
            width=size, height=size,
            meta={"categories": categories, "style": style, "split": split},
        ))
    return samples
