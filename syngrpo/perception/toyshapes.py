"""Procedural images of coloured shapes with exact boxes: data that needs no download.

The toy generators of the REC and OVD tasks, the quickstart and the procedural
synthesizer all draw with these helpers.  Everything is deterministic for a seed
(all randomness comes from the ``numpy.random.Generator`` passed in) and every
box is *exact*: it is the tight bounding box of the pixels the shape painted,
read back from the drawing mask, in pixel-edge coordinates (``x2``/``y2`` are
exclusive, so the box ``[x1, y1, x2, y2]`` covers columns ``x1 .. x2-1``).

Shape colours are saturated (``COLOURS``); every background and clutter colour is
close to grey (its channels differ by at most ``MAX_BACKGROUND_SPREAD``), so a
shape's colour never appears anywhere but on that shape.

Background styles:

``plain``
    a flat light tint; the only style the ``train`` splits of the toy tasks use.
``textured``
    stripes, checks or blotchy noise in muted tones.
``cluttered``
    a plain tint with thin lines and dots scattered over it.
``ood``
    textured *and* cluttered, darker: the out-of-domain test style.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "BACKGROUND_STYLES",
    "COLOURS",
    "MAX_BACKGROUND_SPREAD",
    "SHAPES",
    "DrawnShape",
    "ShapeSpec",
    "background",
    "draw_shape",
    "place_boxes",
    "render_scene",
    "scene_rng",
    "shape_mask",
]

#: shapes the helpers can draw
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "hexagon")

#: name -> RGB; saturated so that no background or clutter pixel can equal one of them
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 90, 230),
    "yellow": (235, 200, 20),
    "purple": (150, 50, 200),
    "orange": (250, 130, 10),
}

BACKGROUND_STYLES: tuple[str, ...] = ("plain", "textured", "cluttered", "ood")

#: background/clutter pixels have max(r, g, b) - min(r, g, b) <= this (shape colours: >= 130)
MAX_BACKGROUND_SPREAD = 30


@dataclass(frozen=True)
class ShapeSpec:
    """A shape to draw: what, in which colour, inside which placement box (pixels)."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class DrawnShape:
    """A shape as drawn: ``bbox`` is the tight box of its painted pixels (x2, y2 exclusive)."""

    shape: str
    colour: str
    bbox: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        """``"red circle"``: the name a referring expression uses."""
        return f"{self.colour} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        return ((self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2)


def scene_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator for one image, from a seed and stable keys (split name, index ...).

    Keys are hashed with CRC32 (stable across processes, unlike ``hash``), so image
    ``i`` of a split is the same whatever ``n`` was asked for.
    """
    words = [int(seed) % 2**64] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(words)


# ---- shapes -----------------------------------------------------------------------------


def _polygon(shape: str, box: Sequence[float]) -> list[tuple[float, float]] | None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "circle":
        return None
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "hexagon":
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    if shape == "star":
        points = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            a = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * rx * math.cos(a), cy + r * ry * math.sin(a)))
        return points
    raise ValueError(f"unknown shape {shape!r}; shapes are {', '.join(SHAPES)}")


def shape_mask(shape: str, box: Sequence[int], size: tuple[int, int]) -> Image.Image:
    """The ``'L'`` mask (255 = painted) of ``shape`` filling ``box`` on an image of ``size``: its own pixels."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    mask = PILImage.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = (int(v) for v in box)
    poly = _polygon(shape, (x0, y0, x1 - 1, y1 - 1))
    if poly is None:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def draw_shape(image: Image.Image, shape: str, box: Sequence[int], colour: str | tuple[int, int, int]
               ) -> tuple[int, int, int, int]:
    """Paint ``shape`` filling ``box`` onto ``image`` (in place); return its exact pixel box.

    The box is read from the mask that was painted, so it is right whatever the
    rasteriser did at the edges.  Raises ValueError when nothing was painted
    (a box off the image or of zero size).
    """
    rgb = COLOURS[colour] if isinstance(colour, str) else tuple(colour)
    mask = shape_mask(shape, box, image.size)
    tight = mask.getbbox()
    if tight is None:
        raise ValueError(f"{shape} in box {tuple(box)} paints no pixel of a {image.size} image")
    image.paste(rgb, (0, 0, *image.size), mask)
    return tuple(int(v) for v in tight)  # type: ignore[return-value]


# ---- backgrounds ------------------------------------------------------------------------


def _muted(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    """A near-grey colour: a base level with a small tint (channel spread <= MAX_BACKGROUND_SPREAD)."""
    base = int(rng.integers(lo, hi + 1))
    half = MAX_BACKGROUND_SPREAD // 2 - 1  # one unit of room for rounding when two such colours mix
    tint = rng.integers(-half, half + 1, size=3)
    return tuple(int(np.clip(base + t, 0, 255)) for t in tint)  # type: ignore[return-value]


def _texture(width: int, height: int, rng: np.random.Generator, dark: bool) -> np.ndarray:
    lo, hi = (60, 150) if dark else (150, 235)
    a, b = np.array(_muted(rng, lo, hi)), np.array(_muted(rng, lo, hi))
    kind = rng.choice(["stripes", "checks", "blotches"])
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "stripes":
        period = int(rng.integers(6, 16))
        angle = rng.uniform(0, math.pi)
        t = ((xx * math.cos(angle) + yy * math.sin(angle)) // (period / 2)) % 2
    elif kind == "checks":
        cell = int(rng.integers(5, 14))
        t = ((xx // cell) + (yy // cell)) % 2
    else:
        cell = int(rng.integers(6, 14))
        coarse = rng.random((height // cell + 2, width // cell + 2))
        t = coarse[yy // cell, xx // cell]
    t = np.asarray(t, dtype=np.float64)[..., None]
    img = a * (1 - t) + b * t  # (H, W, 3); a and b are near-grey, so is every mix of them
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _clutter(image: Image.Image, rng: np.random.Generator, dark: bool) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    w, h = image.size
    n = int(rng.integers(6, 14))
    for _ in range(n):
        colour = _muted(rng, 20, 110) if not dark else _muted(rng, 150, 240)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.6:
            dx, dy = rng.integers(-w // 3, w // 3 + 1, size=2)
            draw.line((x, y, x + int(dx), y + int(dy)), fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = int(rng.integers(1, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def background(width: int, height: int, rng: np.random.Generator, style: str = "plain") -> Image.Image:
    """A background image of the given style (see the module docstring)."""
    from PIL import Image as PILImage

    if style not in BACKGROUND_STYLES:
        raise ValueError(f"unknown background style {style!r}; styles are {', '.join(BACKGROUND_STYLES)}")
    dark = style == "ood"
    if style in ("textured", "ood"):
        image = PILImage.fromarray(_texture(width, height, rng, dark), "RGB")
    else:
        image = PILImage.new("RGB", (width, height), _muted(rng, 215, 245))
    if style in ("cluttered", "ood"):
        _clutter(image, rng, dark)
    return image


# ---- layout -----------------------------------------------------------------------------


def place_boxes(rng: np.random.Generator, sizes: Sequence[int], width: int, height: int, *,
                gap: int = 2, tries: int = 200) -> list[tuple[int, int, int, int]] | None:
    """Square boxes of the given sizes that do not overlap (``gap`` pixels apart), or None.

    Rejection sampling; None when some box found no room in ``tries`` draws.
    """
    boxes: list[tuple[int, int, int, int]] = []
    for size in sizes:
        size = int(size)
        if size > width or size > height:
            return None
        for _ in range(tries):
            x = int(rng.integers(0, width - size + 1))
            y = int(rng.integers(0, height - size + 1))
            box = (x, y, x + size, y + size)
            if all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
                   for b in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def render_scene(specs: Sequence[ShapeSpec], width: int, height: int, rng: np.random.Generator, *,
                 style: str = "plain") -> tuple[Image.Image, list[DrawnShape]]:
    """Draw a background of ``style`` and then every shape; the shapes' exact boxes in order.

    Shapes are drawn last, so clutter never covers them; give non-overlapping boxes
    (:func:`place_boxes`) and every shape keeps all its pixels.
    """
    image = background(width, height, rng, style)
    drawn = [DrawnShape(s.shape, s.colour, draw_shape(image, s.shape, s.box, s.colour)) for s in specs]
    return image, drawn
