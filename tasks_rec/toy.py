"""The REC toy generator: coloured shapes and one unique referring expression per image.

Each image holds 2-4 shapes on a background.  The target is named by colour and
shape ("the red circle"); with probability ``relational_prob`` the scene also
holds a *twin* of the target (same colour and shape) and the expression adds where
the target is relative to its twin ("the red circle on the left").  Distractors
often share the target's colour or its shape, so both words matter.  The
expression always names exactly one object, and the box is the exact box of the
target's painted pixels.

``grid=N`` snaps the layout to an N x N grid of cells: every object is centred in
its own cell at one size, so the box takes one of N*N values.  With cells of 28
pixels (``image_size = 28 * N``) a cell is exactly one merged vision token of
Qwen2.5-VL (patch 14, merge 2).  ``position_code=True`` (grid only) also paints two
small grey marks inside every object, whose grey levels say the object's row
(upper mark) and column (lower mark).  A randomly initialised tiny vision tower
has no sense of absolute position (its rotary embeddings are relative), so without
some such cue the box cannot be read from the image at all; the marks stand in for
the position sense of a pretrained tower and stay inside the object's box, so a
synthesizer that keeps the labelled foreground keeps them too (docs/study.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from syngrpo.perception.toyshapes import COLOURS, SHAPES, DrawnShape, ShapeSpec, place_boxes, render_scene, scene_rng
from syngrpo.types import Sample

#: relation phrase -> does the target's box lie that way of the twin's box
_RELATIONS = {
    "on the left": lambda t, o: t[2] <= o[0],
    "on the right": lambda t, o: t[0] >= o[2],
    "at the top": lambda t, o: t[3] <= o[1],
    "at the bottom": lambda t, o: t[1] >= o[3],
}


def _pick_combos(rng: np.random.Generator, k: int, twin: bool, shapes: Sequence[str],
                 colours: Sequence[str]) -> list[tuple[str, str]]:
    """(shape, colour) of each object; index 0 is the target, index 1 its twin when ``twin``."""
    target = (str(rng.choice(shapes)), str(rng.choice(colours)))
    combos = [target, target] if twin else [target]
    while len(combos) < k:
        roll = rng.random()
        shape = target[0] if roll < 0.35 else str(rng.choice(shapes))
        colour = target[1] if 0.35 <= roll < 0.7 else str(rng.choice(colours))
        if (shape, colour) != target:
            combos.append((shape, colour))
    return combos


def _expression(drawn: list[DrawnShape], target: int, twin: int | None, rng: np.random.Generator) -> str:
    t = drawn[target]
    base = f"the {t.colour} {t.shape}"
    if twin is None:
        return base
    fits = [name for name, holds in _RELATIONS.items() if holds(t.bbox, drawn[twin].bbox)]
    return f"{base} {fits[int(rng.integers(len(fits)))]}"


def grid_boxes(rng: np.random.Generator, k: int, grid: int, size: int, fill: float = 0.75
               ) -> list[tuple[int, int, int, int]] | None:
    """Placement boxes of ``k`` objects in ``k`` distinct cells of a ``grid`` x ``grid`` layout, or None.

    Every box is a square of ``fill`` times the cell side, centred in its cell.
    """
    if k > grid * grid:
        return None
    cell = size / grid
    side = max(4, round(cell * fill))
    cells = rng.choice(grid * grid, size=k, replace=False)
    boxes = []
    for c in cells:
        r, col = divmod(int(c), grid)
        x0 = round(col * cell + (cell - side) / 2)
        y0 = round(r * cell + (cell - side) / 2)
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def code_level(index: int, grid: int) -> int:
    """The grey level that codes row or column ``index`` of a ``grid``: evenly spread over 20..235."""
    return round(20 + (235 - 20) * index / max(1, grid - 1))


def draw_position_code(image: Any, bbox: Sequence[int], grid: int, size: int) -> None:
    """Paint the row mark (upper) and column mark (lower) inside an object's box (in place)."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = (int(v) for v in bbox)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cell = size / grid
    row, col = int(cy // cell), int(cx // cell)
    half = max(1, round((x1 - x0) * 0.12))  # marks of ~1/4 of the object, inside even a star's core
    draw = ImageDraw.Draw(image)
    for level, dy in ((code_level(row, grid), -1), (code_level(col, grid), 1)):
        my = cy + dy * (half + 0.5)
        draw.rectangle((round(cx - half), round(my - half), round(cx + half) - 1, round(my + half) - 1),
                       fill=(level, level, level))


def make_rec_toy(out_dir: str | Path, *, n: int, seed: int, split: str = "train", image_size: int = 112,
                 style: str = "plain", n_shapes: tuple[int, int] = (2, 4), relational_prob: float = 0.3,
                 shapes: Sequence[str] = SHAPES, colours: Sequence[str] = tuple(COLOURS), grid: int = 0,
                 position_code: bool = False) -> list[Sample]:
    """Draw ``n`` REC images into ``out_dir/images`` and return their samples (paths absolute).

    ``style`` is the background (:mod:`syngrpo.perception.toyshapes`): ``"plain"`` by default,
    ``"ood"`` for the out-of-domain test split (textured and cluttered, never in
    a plain train split).  Image ``i`` depends only on ``(seed, split, i)``: asking
    for more images extends the split, and the layout of image ``i`` is the same
    whatever the style.
    """
    lo, hi = int(n_shapes[0]), int(n_shapes[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"n_shapes must be (min, max) with 1 <= min <= max, got {n_shapes!r}")
    if len(shapes) * len(colours) < 2:
        raise ValueError("need at least two (shape, colour) combinations")
    grid = int(grid)
    if grid < 0 or (grid and grid * grid < lo):
        raise ValueError(f"grid must be 0 (free layout) or have at least n_shapes[0] cells, got {grid}")
    if position_code and not grid:
        raise ValueError("position_code needs a grid (grid=N)")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    size = int(image_size)
    min_side, max_side = max(8, round(size * 0.16)), max(9, round(size * 0.30))
    samples = []
    for i in range(n):
        rng = scene_rng(seed, "rec", split, i)
        k = int(rng.integers(lo, hi + 1))
        if grid:
            k = min(k, grid * grid)
        twin = k >= 2 and rng.random() < relational_prob
        while True:
            combos = _pick_combos(rng, k, twin, shapes, colours)
            if grid:
                boxes = grid_boxes(rng, k, grid, size)
            else:
                boxes = place_boxes(rng, rng.integers(min_side, max_side + 1, size=k), size, size,
                                    gap=max(2, size // 40))
            if boxes is not None:
                break
            k = max(1, k - 1)  # no room: fewer shapes
            twin = twin and k >= 2
        order = rng.permutation(k)  # draw order (and list order) independent of role
        specs = [ShapeSpec(combos[j][0], combos[j][1], boxes[j]) for j in order]
        image, drawn = render_scene(specs, size, size, scene_rng(seed, "rec", split, i, "background"), style=style)
        if position_code:
            for d in drawn:
                draw_position_code(image, d.bbox, grid, size)
        target = int(np.nonzero(order == 0)[0][0])
        twin_at = int(np.nonzero(order == 1)[0][0]) if twin else None
        expression = _expression(drawn, target, twin_at, rng)

        sample_id = f"rec-{split}-{i:05d}"
        path = out / "images" / f"{sample_id}.png"
        image.save(path)
        objects: list[dict[str, Any]] = [
            {"bbox_2d": list(d.bbox), "label": d.label, "shape": d.shape, "colour": d.colour} for d in drawn
        ]
        samples.append(Sample(
            id=sample_id, task="rec", image=str(path.resolve()), problem=expression,
            solution=[float(v) for v in drawn[target].bbox], width=size, height=size,
            meta={"objects": objects, "target": target, "style": style, "split": split},
        ))
    return samples


#: how an expression names the image its target is in, by index (the worked example of several images)
IMAGE_ORDINALS = ("first", "second", "third", "fourth")


def make_rec_multi_image_toy(out_dir: str | Path, *, n: int, seed: int, split: str = "train", image_size: int = 112,
                             images_per_sample: int = 2, **options: Any) -> list[Sample]:
    """``n`` REC samples of ``images_per_sample`` toy scenes each; the expression names the target's image.

    The scenes are :func:`make_rec_toy`'s (scene ``k`` of the split, ``images_per_sample * n`` of them, so
    the pixels of each are the one-image generator's); sample ``i`` shows scenes ``i*m .. i*m+m-1`` in
    order, one of them (drawn from ``(seed, split, i)``) is its box image, and the expression is that
    scene's with the image named: "the red circle in the second image".  The box is in the box image's
    pixels (``Sample.box_image``); the other scenes travel as ``Sample.other_images``.
    """
    m = int(images_per_sample)
    if not 2 <= m <= len(IMAGE_ORDINALS):
        raise ValueError(f"images_per_sample must be 2..{len(IMAGE_ORDINALS)} for the toy data, got {m}")
    scenes = make_rec_toy(out_dir, n=n * m, seed=seed, split=split, image_size=image_size, **options)
    samples = []
    for i in range(n):
        group = scenes[i * m : (i + 1) * m]
        box = int(scene_rng(seed, "rec-multi", split, i).integers(0, m))
        target = group[box]
        others = tuple(s.image for j, s in enumerate(group) if j != box)
        samples.append(target.evolve(
            id=f"rec{m}-{split}-{i:05d}", problem=f"{target.problem} in the {IMAGE_ORDINALS[box]} image",
            other_images=others, box_image=box, meta={**target.meta, "scenes": [s.id for s in group]},
        ))
    return samples
