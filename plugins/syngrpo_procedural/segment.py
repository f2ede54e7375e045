"""The ``object`` segmenter: inside each labelled box, the pixels that do not look like its surroundings.

The ``box`` segmenter keeps each labelled box whole, so a synthesized image shows every
object on a rectangle of its old background: a shortcut a policy can learn instead of the
object.  On images whose objects stand out from the background (the toy tasks' shapes, line
art, product shots on a plain backdrop) the object's own pixels can be found without a model:

1. **Reference colours** of the background are read from a thin ring of pixels just *outside*
   the box (a tight box touches its object, the pixels beyond it are background); a box that
   fills the image has no such ring and uses its own border pixels instead.
2. A pixel inside the box is **background-like** when some reference colour is within
   ``tolerance`` of it (largest channel difference).
3. The **background** is the background-like pixels connected to the outside of the box through
   other background-like pixels (a flood fill that does not squeeze through passages of one or
   two pixels); everything else in the box is the object, so marks or holes *inside* an object
   that happen to have the background's colour stay with it.
4. A box whose object covers less than ``min_coverage`` of it is kept whole (the object could
   not be told from its surroundings: keeping a label's pixels beats repainting them).

It knows nothing of how the images were drawn; the toy generators' own masks are only used
by the tests that check it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from syngrpo.synthesis.pipeline import box_pixel_bounds


def _ring(arr: np.ndarray, bounds: tuple[int, int, int, int], width: int) -> np.ndarray:
    """(K, 3) colours of the pixels within ``width`` of the box, outside it (clipped to the image)."""
    c1, r1, c2, r2 = bounds
    h, w = arr.shape[:2]
    R1, C1, R2, C2 = max(0, r1 - width), max(0, c1 - width), min(h, r2 + width), min(w, c2 + width)
    outer = np.ones((R2 - R1, C2 - C1), dtype=bool)
    outer[r1 - R1 : r2 - R1, c1 - C1 : c2 - C1] = False
    return arr[R1:R2, C1:C2][outer]


def _border(region: np.ndarray) -> np.ndarray:
    """(K, 3) colours of a region's outermost rows and columns."""
    edge = np.zeros(region.shape[:2], dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    return region[edge]


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its 4-neighbours."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _background_from_edge(candidates: np.ndarray) -> np.ndarray:
    """The background of a box: its ``candidates`` (background-like pixels) reachable from outside the box.

    The flood runs through the candidates *eroded* by one pixel (the outside counts as
    background), then grows back by one pixel: a passage of one or two pixels, such as the
    corner of a grey mark that sticks out of a triangle, does not let the background in.
    """
    padded = np.pad(candidates, 1, constant_values=True)
    core = padded & ~_grow(~padded)  # eroded: every 4-neighbour is background-like too
    reached = np.zeros_like(padded)
    reached[0, :] = reached[-1, :] = reached[:, 0] = reached[:, -1] = True
    while True:
        grown = _grow(reached) & core
        if np.array_equal(grown, reached):
            break
        reached = grown
    return (_grow(reached) & padded)[1:-1, 1:-1]


def object_mask_in_box(arr: np.ndarray, box: Sequence[float], *, tolerance: int = 4, ring: int = 2,
                       min_coverage: float = 0.1) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The pixel bounds of ``box`` in the (H, W, 3) uint8 image ``arr`` and the object's (h, w) bool mask there."""
    bounds = box_pixel_bounds(box, arr.shape[1], arr.shape[0])
    c1, r1, c2, r2 = bounds
    region = arr[r1:r2, c1:c2].astype(np.int16)
    if region.size == 0:
        return bounds, np.zeros(region.shape[:2], dtype=bool)
    reference = _ring(arr, bounds, ring) if ring > 0 else np.empty((0, 3), arr.dtype)
    if len(reference) == 0:  # the box fills the image: its own border is the best guess of the background
        reference = _border(region)
    reference = np.unique(reference.astype(np.int16), axis=0)  # (M, 3); plain backgrounds give a handful
    background_like = np.zeros(region.shape[:2], dtype=bool)
    flat = region.reshape(-1, 3)
    for start in range(0, len(reference), 256):  # (N, 256, 3) at most at a time
        diff = np.abs(flat[:, None, :] - reference[None, start : start + 256, :]).max(axis=-1)
        background_like |= (diff <= tolerance).any(axis=1).reshape(region.shape[:2])
    obj = ~_background_from_edge(background_like)
    if obj.mean() < min_coverage:
        obj[:] = True
    return bounds, obj


class ObjectSegmenter:
    """Foreground = the pixels inside each labelled box that differ from the colours around it (no model).

    ``tolerance``: largest channel difference (0-255) at which a pixel still matches a
    background colour; ``ring``: width in pixels of the band outside the box the background
    colours are read from; ``min_coverage``: a box whose object is smaller than this share of
    it is kept whole.  See the module docstring for the algorithm.
    """

    def __init__(self, *, tolerance: int = 4, ring: int = 2, min_coverage: float = 0.1,
                 device: str = "cpu") -> None:
        if not 0 <= int(tolerance) <= 255:
            raise ValueError(f"tolerance must be in 0..255, got {tolerance}")
        if int(ring) < 0:
            raise ValueError(f"ring must be >= 0, got {ring}")
        if not 0.0 <= float(min_coverage) <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
        self.tolerance = int(tolerance)
        self.ring = int(ring)
        self.min_coverage = float(min_coverage)
        self.device = device  # unused: plain numpy on the CPU

    def segment(self, images: list[Image.Image], boxes: list[list[Any]]) -> list[Image.Image]:
        masks = []
        for image, image_boxes in zip(images, boxes, strict=True):
            arr = np.asarray(image.convert("RGB"))
            mask = np.zeros(arr.shape[:2], dtype=bool)
            for box in image_boxes:
                (c1, r1, c2, r2), obj = object_mask_in_box(arr, box, tolerance=self.tolerance, ring=self.ring,
                                                           min_coverage=self.min_coverage)
                mask[r1:r2, c1:c2] |= obj
            masks.append(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"))
        return masks
