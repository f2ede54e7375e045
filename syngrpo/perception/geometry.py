"""Boxes and the axis-aligned image transforms that move them.

Every image operation syngrpo does before a model sees the pixels (resize to
the processor's grid, pad, crop, paste onto a synthesis canvas) is an
axis-aligned affine map ``x' = sx * x + tx``, ``y' = sy * y + ty``.  Keeping it
as one small object means labels follow images exactly, and a predicted box in
the model-input frame maps back to the original frame with ``inverse()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from syngrpo.types import Box


@dataclass(frozen=True)
class ImageTransform:
    """An axis-aligned affine map between two image frames, with the output size."""

    sx: float = 1.0
    sy: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    width: int = 0  # size of the output frame; 0 means unbounded (no clipping)
    height: int = 0

    @classmethod
    def identity(cls, width: int = 0, height: int = 0) -> ImageTransform:
        return cls(width=width, height=height)

    @classmethod
    def resize(cls, src_w: int, src_h: int, dst_w: int, dst_h: int) -> ImageTransform:
        return cls(dst_w / src_w, dst_h / src_h, 0.0, 0.0, dst_w, dst_h)

    @classmethod
    def pad(cls, src_w: int, src_h: int, left: int, top: int, right: int, bottom: int) -> ImageTransform:
        return cls(1.0, 1.0, float(left), float(top), src_w + left + right, src_h + top + bottom)

    @classmethod
    def crop(cls, x1: int, y1: int, x2: int, y2: int) -> ImageTransform:
        return cls(1.0, 1.0, -float(x1), -float(y1), x2 - x1, y2 - y1)

    @classmethod
    def paste(cls, x: int, y: int, canvas_w: int, canvas_h: int) -> ImageTransform:
        """Place the source image with its top-left corner at ``(x, y)`` on a canvas."""
        return cls(1.0, 1.0, float(x), float(y), canvas_w, canvas_h)

    def then(self, other: ImageTransform) -> ImageTransform:
        """First ``self``, then ``other``."""
        return ImageTransform(
            other.sx * self.sx,
            other.sy * self.sy,
            other.sx * self.tx + other.tx,
            other.sy * self.ty + other.ty,
            other.width,
            other.height,
        )

    def inverse(self, src_w: int = 0, src_h: int = 0) -> ImageTransform:
        """The map back; pass the source size so clipping applies in the source frame."""
        if self.sx == 0 or self.sy == 0:
            raise ValueError("a transform with a zero scale has no inverse")
        return ImageTransform(1 / self.sx, 1 / self.sy, -self.tx / self.sx, -self.ty / self.sy, src_w, src_h)

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.sx * x + self.tx, self.sy * y + self.ty

    def box(self, box: Sequence[float], *, clip: bool = True) -> Box:
        """Map a box; with ``clip`` it is clipped to the output frame (when its size is known)."""
        x1, y1 = self.point(box[0], box[1])
        x2, y2 = self.point(box[2], box[3])
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        if clip and self.width > 0 and self.height > 0:
            x1, x2 = _clamp(x1, 0, self.width), _clamp(x2, 0, self.width)
            y1, y2 = _clamp(y1, 0, self.height), _clamp(y2, 0, self.height)
        return (x1, y1, x2, y2)

    @property
    def is_uniform(self) -> bool:
        """True when both axes scale alike, so angles (ISR rotations) are unchanged."""
        return math.isclose(abs(self.sx), abs(self.sy), rel_tol=1e-9)


def _clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (eq. 2's IoU); 0 for empty boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    if not (union > 0) or not math.isfinite(union):
        return 0.0
    return max(0.0, min(1.0, inter / union))


def valid_box(box: object) -> bool:
    """A sequence of four finite numbers with x1 <= x2 and y1 <= y2."""
    try:
        if len(box) != 4:  # type: ignore[arg-type]
            return False
        vals = [float(v) for v in box]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return False
    return all(math.isfinite(v) for v in vals) and vals[0] <= vals[2] and vals[1] <= vals[3]
