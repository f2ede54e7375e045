"""The ``procedural`` synthesizer and the ``box`` segmenter: the whole data-server loop on a CPU.

The procedural synthesizer draws a new background from the words of the description: the
colours it names (those not used by the labelled objects), a texture it names (stripes, dots,
checker, grid, bricks, waves, noise, gradient, plain), clutter when it says the scene is busy,
and distractor objects placed outside every labelled box.  Distractors make the image harder
without making a label wrong: a label that names a colour ("red circle") gets distractors of
the same shape in other colours; a label that is a bare class ("circle") gets shapes of other
classes (set ``distractor_classes`` to pick them, or ``distractors: 0`` for none).

``tones`` says how the background's colours are painted. ``vivid`` (the default) uses the named
colours as they are, so a new background may carry the saturated colours of other objects: a
harder image, and a shift away from the toy world's own backgrounds. ``muted`` paints near-grey
tints of them (channel spread at most :data:`syngrpo.perception.toyshapes.MAX_BACKGROUND_SPREAD`), which keeps
the toy world's rule that saturated colour appears only on objects: a new scene of the same world,
as an outpainting model paints a plausible background, with the description still choosing the
tint, the texture and the clutter.

Same request and seed → the same image, byte for byte.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from syngrpo.perception import toyshapes
from syngrpo.synthesis.pipeline import SynthesisRequest, boxes_mask, check_deadline

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 180), "violet": (150, 90, 210), "pink": (240, 130, 180),
    "brown": (130, 80, 40), "black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128),
    "gray": (128, 128, 128), "cyan": (40, 200, 220), "teal": (30, 130, 130), "magenta": (210, 40, 170),
    "beige": (225, 210, 170), "navy": (20, 30, 100), "olive": (110, 120, 40), "gold": (212, 175, 55),
    "silver": (190, 190, 200), "turquoise": (60, 210, 190), "maroon": (120, 20, 30), "lime": (150, 230, 60),
    "sand": (220, 200, 150), "sky": (135, 190, 235), "grass": (90, 160, 70), "wood": (150, 110, 70),
}
#: words that name a scene and imply colours
SCENES: dict[str, tuple[str, ...]] = {
    "forest": ("green", "brown"), "beach": ("sand", "sky"), "ocean": ("blue", "navy"), "sea": ("blue", "teal"),
    "desert": ("sand", "orange"), "snow": ("white", "silver"), "night": ("navy", "black"),
    "sunset": ("orange", "purple"), "field": ("grass", "yellow"), "kitchen": ("beige", "wood"),
    "street": ("grey", "black"), "room": ("beige", "wood"), "garden": ("grass", "pink"), "sky": ("sky", "white"),
}
TEXTURES: dict[str, str] = {
    "stripes": "stripes", "striped": "stripes", "stripy": "stripes", "lines": "stripes",
    "dots": "dots", "dotted": "dots", "spots": "dots", "spotted": "dots", "polka": "dots",
    "checker": "checker", "checkered": "checker", "checkerboard": "checker", "chess": "checker",
    "tiles": "checker", "tiled": "checker",
    "grid": "grid", "mesh": "grid",
    "bricks": "bricks", "brick": "bricks", "wall": "bricks",
    "waves": "waves", "wavy": "waves", "water": "waves", "ripples": "waves",
    "noise": "noise", "noisy": "noise", "grainy": "noise", "gravel": "noise", "sand": "noise", "speckled": "noise",
    "gradient": "gradient", "fading": "gradient", "sunset": "gradient", "sky": "gradient",
    "plain": "plain", "solid": "plain", "uniform": "plain", "blank": "plain",
}
#: shape words a label may use; distractors are drawn with the toy tasks' own shapes (syngrpo.perception.toyshapes)
SHAPE_WORDS = {"oval": "ellipse", "ellipse": "ellipse", "rhombus": "diamond", "box": "square",
               "rectangle": "rectangle", "cross": "cross", "plus": "cross", **{s: s for s in toyshapes.SHAPES}}
_BUSY = {"cluttered", "busy", "crowded", "messy", "cramped", "chaotic", "full", "many"}
_CALM = {"clean", "minimal", "simple", "empty", "sparse", "tidy", "plain"}


def words_of(text: str) -> list[str]:
    """Lower-case words, plurals folded (``circles`` → ``circle``)."""
    out = []
    for w in re.findall(r"[a-z]+", text.lower()):
        if len(w) > 3 and w.endswith("s") and w[:-1] in SHAPE_WORDS:
            w = w[:-1]
        out.append(w)
    return out


def parse_label(label: str) -> tuple[str | None, str | None]:
    """``("red", "circle")`` from ``"the red circle"``; either part may be ``None``."""
    colour = shape = None
    for w in words_of(label):
        if colour is None and w in COLOURS:
            colour = w
        if shape is None and w in SHAPE_WORDS:
            shape = SHAPE_WORDS[w]
    return colour, shape


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


TONES = ("vivid", "muted")


def mute(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A near-grey tint of ``rgb``: its brightness mapped linearly into 140..240 (so "night" and "black" come out
    a mid grey: toy backgrounds are light) plus its hue, scaled to a channel spread of at most
    ``MAX_BACKGROUND_SPREAD - 2`` (two units of room for rounding)."""
    arr = np.asarray(rgb, np.float32)
    level = 140.0 + 100.0 * float(arr.mean()) / 255.0
    tint = arr - arr.mean()
    spread = float(tint.max() - tint.min())
    limit = toyshapes.MAX_BACKGROUND_SPREAD - 2
    if spread > limit:
        tint *= limit / spread
    return tuple(int(v) for v in np.clip(np.round(level + tint), 0, 255))  # type: ignore[return-value]


def _texture(kind: str, size: tuple[int, int], c1: tuple[int, int, int], c2: tuple[int, int, int],
             rng: np.random.Generator, *, grey_grain: bool = False) -> np.ndarray:
    """An (H, W, 3) uint8 background of ``kind`` in colours ``c1`` and ``c2``.

    ``grey_grain``: the grain is the same on every channel, so it adds no colour (muted tones)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = np.array(c1, np.float32), np.array(c2, np.float32)
    period = float(rng.integers(max(4, min(w, h) // 16), max(6, min(w, h) // 5) + 1))
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        t = ((xx * np.cos(angle) + yy * np.sin(angle)) // (period / 2)) % 2
    elif kind == "checker":
        t = ((xx // period) + (yy // period)) % 2
    elif kind == "grid":
        t = ((xx % period) < 2) | ((yy % period) < 2)
    elif kind == "bricks":
        row = yy // (period / 2)
        t = ((yy % (period / 2)) < 2) | (((xx + (row % 2) * period / 2) % period) < 2)
    elif kind == "waves":
        t = (np.sin(xx / period * 2 * np.pi + np.sin(yy / period * np.pi) * 2) + 1) / 2
    elif kind == "dots":
        r = period / 5
        t = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < r * r
    elif kind == "gradient":
        t = yy / max(1, h - 1)
    elif kind == "noise":
        t = rng.random((h, w), dtype=np.float32)
    else:  # plain
        t = np.zeros((h, w), np.float32)
    t = np.asarray(t, np.float32)[..., None]
    img = a * (1 - t) + b * t
    grain_shape = (h, w, 1) if grey_grain else img.shape
    img += rng.normal(0, 4, size=grain_shape).astype(np.float32)  # a little grain: no two backgrounds alike
    return np.clip(img, 0, 255).astype(np.uint8)


def _free_spot(rng: np.random.Generator, size: tuple[int, int], wh: tuple[float, float], blocked: np.ndarray,
               tries: int = 40) -> tuple[float, float, float, float] | None:
    """A box of size ``wh`` that overlaps no blocked pixel, or None."""
    w, h = size
    bw, bh = max(3.0, min(wh[0], w / 2)), max(3.0, min(wh[1], h / 2))
    for _ in range(tries):
        x1 = float(rng.uniform(0, max(1.0, w - bw)))
        y1 = float(rng.uniform(0, max(1.0, h - bh)))
        c1, r1 = int(x1), int(y1)
        c2, r2 = min(w, int(np.ceil(x1 + bw)) + 1), min(h, int(np.ceil(y1 + bh)) + 1)
        if not blocked[r1:r2, c1:c2].any():
            return (x1, y1, x1 + bw, y1 + bh)
    return None


class ProceduralSynthesizer:
    """A new background drawn from the description's words (CPU, no model); see the module doc."""

    def __init__(self, *, distractors: int = 2, clutter: int | None = None,
                 distractor_classes: list[str] | None = None, tones: Literal["vivid", "muted"] = "vivid",
                 max_batch_size: int = 16,
                 device: str = "cpu") -> None:
        if distractors < 0:
            raise ValueError("distractors must be >= 0")
        if tones not in TONES:
            raise ValueError(f"tones must be one of {', '.join(TONES)}, not {tones!r}")
        self.distractors = int(distractors)
        self.tones = tones
        self.clutter = clutter
        self.distractor_classes = distractor_classes
        self.max_batch_size = int(max_batch_size)
        self.device = device  # unused: drawing runs on the CPU

    def synthesize(self, requests: list[SynthesisRequest]) -> list[Image.Image]:
        return [self.draw(r) for r in requests]

    def draw(self, req: SynthesisRequest) -> Image.Image:
        opts = dict(req.options)
        distractors = int(opts.pop("distractors", self.distractors))
        clutter_opt = opts.pop("clutter", self.clutter)
        classes = opts.pop("distractor_classes", self.distractor_classes)
        tones = opts.pop("tones", None) or self.tones
        if distractors < 0:
            raise ValueError(f"distractors must be >= 0, not {distractors}")
        if tones not in TONES:
            raise ValueError(f"tones must be one of {', '.join(TONES)}, not {tones!r}")
        if opts:
            raise ValueError(f"unknown procedural option(s) {sorted(opts)}; known: distractors, clutter, "
                             "distractor_classes, tones")
        muted = tones == "muted"
        size = req.image.size
        rng = toyshapes.scene_rng(req.seed, req.seed >> 32, req.description)
        words = words_of(req.description)
        label_colours = {c for c, _ in map(parse_label, req.labels) if c}

        # colours: those the description names for the scene, not the objects' own
        named = [w for w in words if w in COLOURS]
        for w in words:
            named.extend(SCENES.get(w, ()))
        bg = [c for c in dict.fromkeys(named) if c not in label_colours] or list(dict.fromkeys(named))
        palette = [c for c in COLOURS if c not in label_colours and c not in bg]
        while len(bg) < 2:
            bg.append(palette[int(rng.integers(len(palette)))])
        c1, c2 = _jitter(rng, COLOURS[bg[0]]), _jitter(rng, COLOURS[bg[1]])
        if muted:
            c1, c2 = mute(c1), mute(c2)
        texture = next((TEXTURES[w] for w in words if w in TEXTURES), None)
        if texture is None:
            texture = sorted(set(TEXTURES.values()))[int(rng.integers(len(set(TEXTURES.values()))))]
        canvas = Image.fromarray(_texture(texture, size, c1, c2, rng, grey_grain=muted), mode="RGB")
        draw = ImageDraw.Draw(canvas)

        blocked = np.asarray(boxes_mask(req.boxes, size)) > 0
        mean_w = float(np.mean([b[2] - b[0] for b in req.boxes])) if req.boxes else size[0] / 5
        mean_h = float(np.mean([b[3] - b[1] for b in req.boxes])) if req.boxes else size[1] / 5

        # clutter: small muted marks, more when the description says the scene is busy
        if clutter_opt is None:
            n_clutter = 12 if _BUSY & set(words) else 0 if _CALM & set(words) else 4
        else:
            n_clutter = int(clutter_opt)
        for _ in range(n_clutter):
            check_deadline()
            spot = _free_spot(rng, size, (mean_w * rng.uniform(0.15, 0.4), mean_h * rng.uniform(0.15, 0.4)), blocked)
            if spot is None:
                continue
            mix = tuple(int(0.6 * a + 0.4 * b) for a, b in zip(c1, c2, strict=True))
            mark = _jitter(rng, mix, 40)  # type: ignore[arg-type]
            if muted:
                mark = mute(mark)
            draw.ellipse(spot, fill=mark) if rng.random() < 0.5 else draw.line(
                [spot[:2], spot[2:]], fill=mark, width=max(1, int(min(size) / 64)))

        # distractors: the task's classes, in a form that cannot match any label
        if _BUSY & set(words):
            distractors += 1
        for k in range(distractors):
            check_deadline()  # a job past its time-out stops here instead of running on abandoned
            shape, colour = self._distractor(rng, req.labels, label_colours, classes, k)
            side = float(np.sqrt(mean_w * mean_h) * rng.uniform(0.7, 1.1))
            spot = None
            for shrink in (1.0, 0.75, 0.55, 0.4):  # small images: a smaller distractor rather than none
                spot = _free_spot(rng, size, (side * shrink, side * shrink), blocked, tries=20)
                if spot is not None:
                    break
            if spot is None:
                continue
            box = (int(spot[0]), int(spot[1]), int(np.ceil(spot[2])), int(np.ceil(spot[3])))
            try:
                toyshapes.draw_shape(canvas, shape, box, colour)
            except ValueError:  # too small to paint a pixel
                continue
            blocked[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
        return canvas

    @staticmethod
    def _distractor(rng: np.random.Generator, labels: list[str], label_colours: set[str],
                    classes: list[str] | None, k: int) -> tuple[str, str]:
        """A (shape, colour) of the toy tasks' vocabulary that no label names."""
        free = [c for c in toyshapes.COLOURS if c not in label_colours] or list(toyshapes.COLOURS)
        colour_pick = free[int(rng.integers(len(free)))]
        if classes:
            colour, shape = parse_label(classes[k % len(classes)])
            shape = shape if shape in toyshapes.SHAPES else "circle"
            return shape, colour if colour in toyshapes.COLOURS else colour_pick
        parsed = [parse_label(lab) for lab in labels] or [(None, None)]
        colour, shape = parsed[k % len(parsed)]
        if colour is not None and shape in toyshapes.SHAPES:
            return shape, colour_pick  # same class, another colour: harder, and no label becomes wrong
        label_shapes = {s for _, s in parsed if s}
        others = [s for s in toyshapes.SHAPES if s not in label_shapes] or list(toyshapes.SHAPES)
        return others[int(rng.integers(len(others)))], colour_pick


class BoxSegmenter:
    """Foreground = the labelled boxes (no model): the whole box is kept."""

    def __init__(self, *, device: str = "cpu") -> None:
        self.device = device

    def segment(self, images: list[Image.Image], boxes: list[list[Any]]) -> list[Image.Image]:
        return [boxes_mask(b, im.size) for im, b in zip(images, boxes, strict=True)]
