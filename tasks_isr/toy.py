"""Procedural top-view rooms with exact labels (the ISR toy data set).

A room is a floor rectangle inside thick walls on a dark background; furniture
footprints are rectangles placed on the floor, each turned by its rotation
(see :mod:`tasks_isr.rotation` for the convention).  Every piece has a darker
band along its back, so its rotation can be read from the pixels modulo 360.

Labels are geometric, not read back from pixels: ``bbox_2d`` is the axis-aligned
box of the rotated footprint polygon (rounded to 0.01 px), and the polygon is
rasterised so that a pixel is painted when its centre lies inside it; the
painted pixels therefore stay within one pixel of the box (and fill it exactly
for rotations that are multiples of 90 degrees, whose edges fall on pixel
borders).  Footprints
never overlap (their boxes keep a gap), so no object hides another.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

#: label -> (width, depth) as fractions of the room's shorter side, and body colour.
#: Width runs along the object's left-right axis, depth from its back to its front.
FURNITURE: dict[str, tuple[tuple[float, float], tuple[int, int, int]]] = {
    "bed": ((0.34, 0.44), (70, 110, 200)),
    "sofa": ((0.42, 0.17), (200, 70, 70)),
    "table": ((0.28, 0.19), (150, 95, 45)),
    "chair": ((0.12, 0.12), (230, 170, 40)),
    "wardrobe": ((0.34, 0.14), (110, 60, 140)),
    "nightstand": ((0.11, 0.10), (40, 160, 150)),
    "desk": ((0.30, 0.15), (90, 150, 60)),
    "tv stand": ((0.32, 0.10), (60, 60, 60)),
}

ROTATION_MODES = ("right", "any", "mixed")
#: depth fraction of the darker band along an object's back (shows which way it faces)
BACK_BAND = 0.3


@dataclass(frozen=True)
class Footprint:
    """One placed piece of furniture: centre, size and rotation in pixels / degrees."""

    label: str
    cx: float
    cy: float
    width: float
    depth: float
    rotation: float

    def corners(self) -> list[tuple[float, float]]:
        """The footprint polygon (back-left, back-right, front-right, front-left)."""
        t = math.radians(self.rotation)
        c, s = math.cos(t), math.sin(t)
        hw, hd = self.width / 2, self.depth / 2
        local = [(-hw, -hd), (hw, -hd), (hw, hd), (-hw, hd)]
        # local +v is the front; rotating (0, 1) clockwise on screen by t gives (-sin t, cos t)
        return [(self.cx + u * c - v * s, self.cy + u * s + v * c) for u, v in local]

    def bbox(self) -> list[float]:
        xs, ys = zip(*self.corners(), strict=True)
        return [round(min(xs), 2), round(min(ys), 2), round(max(xs), 2), round(max(ys), 2)]


    def paint(self, pixels: np.ndarray, colour: tuple[int, int, int], *, back: float = 0.0) -> None:
        """Paint every pixel whose centre lies inside the footprint (or its back band) into ``pixels`` (H, W, 3).

        Done here rather than with ``ImageDraw.polygon``, whose treatment of
        fractional vertices is not the pixel-centre rule the labels assume.
        """
        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = self.bbox()
        i0, i1 = max(0, math.floor(x1)), min(w, math.ceil(x2))
        j0, j1 = max(0, math.floor(y1)), min(h, math.ceil(y2))
        if i0 >= i1 or j0 >= j1:
            return
        xs, ys = np.meshgrid(np.arange(i0, i1) + 0.5 - self.cx, np.arange(j0, j1) + 0.5 - self.cy)  # (rows, cols)
        t = math.radians(self.rotation)
        c, s = math.cos(t), math.sin(t)
        u, v = xs * c + ys * s, -xs * s + ys * c  # pixel centres in the object's own frame
        hw, hd = self.width / 2, self.depth / 2
        v_front = hd if back <= 0 else -hd + back * self.depth
        inside = (np.abs(u) < hw) & (v > -hd) & (v < v_front)
        pixels[j0:j1, i0:i1][inside] = colour


def _darker(colour: tuple[int, int, int], f: float = 0.55) -> tuple[int, int, int]:
    return tuple(int(v * f) for v in colour)  # type: ignore[return-value]


def _pick_rotation(rng: random.Random, mode: str) -> float:
    if mode == "right" or (mode == "mixed" and rng.random() < 0.7):
        return float(rng.choice((0, 90, 180, 270)))
    return float(rng.randrange(360))


def make_room(
    rng: random.Random,
    size: int = 112,
    *,
    min_objects: int = 2,
    max_objects: int = 5,
    rotation: str = "mixed",
    classes: list[str] | None = None,
    gap: float = 2.0,
) -> tuple[Image.Image, list[dict[str, Any]], list[int]]:
    """Draw one room: ``(image, objects, floor_box)``; objects are ``{"bbox_2d", "label", "rotation"}``."""
    if rotation not in ROTATION_MODES:
        raise ValueError(f"rotation must be one of {ROTATION_MODES}, got {rotation!r}")
    names = list(classes or FURNITURE)
    unknown = [n for n in names if n not in FURNITURE]
    if unknown:
        raise ValueError(f"the toy generator draws only {sorted(FURNITURE)}; unknown: {unknown}")
    img = Image.new("RGB", (size, size), (28, 28, 32))
    draw = ImageDraw.Draw(img)

    margin = rng.randint(2, max(2, size // 14))
    rx1, ry1 = margin + rng.randint(0, size // 16), margin + rng.randint(0, size // 16)
    rx2, ry2 = size - margin - rng.randint(0, size // 16), size - margin - rng.randint(0, size // 16)
    wall = max(2, size // 32)
    draw.rectangle([rx1, ry1, rx2 - 1, ry2 - 1], fill=(200, 200, 205))  # walls
    fx1, fy1, fx2, fy2 = rx1 + wall, ry1 + wall, rx2 - wall, ry2 - wall
    floor = tuple(rng.randint(175, 225) for _ in range(3))
    draw.rectangle([fx1, fy1, fx2 - 1, fy2 - 1], fill=floor)
    plank = max(4, size // 14)  # faint plank lines: texture the model has to look past
    for y in range(fy1 + plank, fy2, plank):
        draw.line([(fx1, y), (fx2 - 1, y)], fill=_darker(floor, 0.93))  # type: ignore[arg-type]

    side = min(fx2 - fx1, fy2 - fy1)
    n = rng.randint(min_objects, max_objects)
    placed: list[Footprint] = []
    boxes: list[list[float]] = []
    for _ in range(n * 30):
        if len(placed) == n:
            break
        label = rng.choice(names)
        (wf, df), _colour = FURNITURE[label]
        jitter = rng.uniform(0.85, 1.15)
        w, d = max(3.0, round(wf * side * jitter)), max(3.0, round(df * side * jitter))
        fp = Footprint(label, 0.0, 0.0, w, d, _pick_rotation(rng, rotation))
        bx = fp.bbox()
        bw, bh = bx[2] - bx[0], bx[3] - bx[1]
        lo_x, hi_x = fx1 + gap + bw / 2, fx2 - gap - bw / 2
        lo_y, hi_y = fy1 + gap + bh / 2, fy2 - gap - bh / 2
        if lo_x > hi_x or lo_y > hi_y:
            continue
        cx, cy = float(round(rng.uniform(lo_x, hi_x))), float(round(rng.uniform(lo_y, hi_y)))
        if fp.rotation % 90 == 0:  # put the edges on pixel borders: an odd extent needs a half-pixel centre
            cx += 0.5 * (round(bw) % 2)
            cy += 0.5 * (round(bh) % 2)
        fp = Footprint(label, cx, cy, w, d, fp.rotation)
        box = fp.bbox()
        if any(box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap
               for o in boxes):
            continue
        placed.append(fp)
        boxes.append(box)

    pixels = np.array(img)
    objects = []
    for fp, box in zip(placed, boxes, strict=True):
        colour = FURNITURE[fp.label][1]
        fp.paint(pixels, colour)
        fp.paint(pixels, _darker(colour), back=BACK_BAND)
        objects.append({"bbox_2d": box, "label": fp.label, "rotation": fp.rotation})
    return Image.fromarray(pixels), objects, [rx1, ry1, rx2, ry2]
