"""Toy data of the ``isr_refine`` task: tidy rooms, perturbed.

A reference room comes from :func:`tasks_isr.toy.make_room` with right-angle rotations (the tidy
layout: every piece square to the walls).  Each piece is then moved by up to ``max_shift`` of the
image side and turned by ``min_turn`` to ``max_turn`` degrees either way; the image shows that
perturbed (current) room, drawn on the very same floor.  The task is to give the tidy layout
back: the rotations are fully recoverable (snap to the nearest right angle the piece's back band
shows), the positions only up to the perturbation (a model that copies the current layout is the
baseline to beat; docs/tasks/isr.md gives its scores).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from PIL import Image

from tasks_isr.toy import BACK_BAND, FURNITURE, Footprint, _darker, make_room


def _footprint(obj: dict[str, Any]) -> Footprint:
    """The footprint of a right-angle object from its box (width runs along its left-right axis)."""
    x1, y1, x2, y2 = obj["bbox_2d"]
    w, h = x2 - x1, y2 - y1
    across, deep = (w, h) if obj["rotation"] % 180 == 0 else (h, w)
    return Footprint(obj["label"], (x1 + x2) / 2, (y1 + y2) / 2, across, deep, float(obj["rotation"]))


def make_refine_room(rng: random.Random, size: int = 112, *, max_shift: float = 0.06, min_turn: float = 8.0,
                     max_turn: float = 30.0, min_objects: int = 2, max_objects: int = 4,
                     classes: list[str] | None = None) -> tuple[Image.Image, list[dict[str, Any]], list[dict[str, Any]]]:
    """``(image of the current room, reference objects, current objects)``; objects carry ``id``."""
    if not 0 <= min_turn <= max_turn < 45:
        raise ValueError(f"turns must satisfy 0 <= min_turn <= max_turn < 45 (so the nearest right angle is the "
                         f"reference), got {min_turn}, {max_turn}")
    state = rng.getstate()
    _, reference, _ = make_room(rng, size, min_objects=min_objects, max_objects=max_objects, rotation="right",
                                classes=classes)
    empty_rng = random.Random()
    empty_rng.setstate(state)  # the same room drawn again without furniture: the floor to paint on
    empty, _, _ = make_room(empty_rng, size, min_objects=0, max_objects=0, rotation="right", classes=classes)
    pixels = np.array(empty)
    current = []
    for i, obj in enumerate(reference):
        fp = _footprint(obj)
        limit = max_shift * size
        dx, dy = rng.uniform(-limit, limit), rng.uniform(-limit, limit)
        turn = rng.uniform(min_turn, max_turn) * rng.choice((-1, 1))
        moved = Footprint(fp.label, fp.cx + dx, fp.cy + dy, fp.width, fp.depth, (fp.rotation + turn) % 360.0)
        box = moved.bbox()
        # keep the piece inside the image: undo the part of the shift that pushed it out
        sx = max(0.0, -box[0]) - max(0.0, box[2] - size)
        sy = max(0.0, -box[1]) - max(0.0, box[3] - size)
        if sx or sy:
            moved = Footprint(fp.label, moved.cx + sx, moved.cy + sy, fp.width, fp.depth, moved.rotation)
            box = moved.bbox()
        colour = FURNITURE[fp.label][1]
        moved.paint(pixels, colour)
        moved.paint(pixels, _darker(colour), back=BACK_BAND)
        obj["id"] = i
        current.append({"id": i, "label": fp.label, "bbox_2d": box, "rotation": round(moved.rotation, 2)})
    reference = [{"id": o["id"], "label": o["label"], "bbox_2d": [float(v) for v in o["bbox_2d"]],
                  "rotation": float(o["rotation"])} for o in reference]
    return Image.fromarray(pixels), reference, current
