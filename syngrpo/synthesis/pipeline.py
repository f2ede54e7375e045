"""The label-preserving synthesis pipeline of the data server (paper §3.3.1).

One job: an image, its labelled boxes and a new description.  The pipeline

1. asks a **segmenter** for the foreground of the image,
2. keeps the segmented foreground *within the labelled boxes* (the paper "masks out image
   regions beyond the ground-truth bounding boxes" and uses a foreground segmenter to keep
   only the objects themselves),
3. asks a **synthesizer** (an outpainter) to repaint everything else from the description,
4. pastes the original foreground pixels back (a diffusion model re-encodes them through its
   VAE, so they are never exact on their own), and
5. checks every labelled object of the result against the *original* image
   (:func:`check_labelled_objects`): in each labelled box the kept mask must reach every side of
   the box (within ``max_label_edge_gap`` of its width or height, and 2 pixels), cover at least
   ``min_label_coverage`` of it, keep unchanged at least ``min_label_object_coverage`` of **the
   labelled object's own pixels** -- the label segmenter's mask of it on the original, computed at
   the box (:func:`label_object_masks`) -- and every kept pixel must equal the original's.  A result
   that fails the check is a failed job, never a label the check knows to be wrong.

Why these rules: checking only "kept pixels unchanged" passes by construction, since the paste-back
copies exactly those pixels.  The failure to catch is a segmenter that keeps the wrong object -- an
occluder, a part, something beside or behind the labelled one -- so that the labelled object itself
is repainted under its unchanged box.  A labelled box is drawn tightly around its object, so a side
of the box the kept region does not reach is a side where the object's own pixels were repainted: a
proof, not a guess.  A share of the box alone was not enough: a wrong mask keeping the top 30 % of a
box passed it with 75 % of the labelled circle repainted (issue #23; ``tests/server/test_label_check.py``).
The sides do not see a wrong mask that reaches every side as the object would (a table behind a cup,
a frame along the box's border).  The object rule does: the label segmenter is asked again, on a crop
of the original around that one box (the box plus a margin, the box as its only prompt), where the
labelled object is what the crop is about, and the result must keep that mask's pixels.  It is a
second opinion only where that answer can differ from the one the keep mask came from: a
``label_segmenter`` other than the job's segmenter, a segmenter that looks at the whole image rather
than the box (BEN2's salient foreground), or a model whose answer depends on the view (SAM on the
zoomed crop against SAM on the whole image: a part in one view and the whole object in the other
fails the job).  With ``box`` or ``object`` as their own label segmenter the two answers agree by
construction (both read only the box and the pixels just around it) and the rule adds nothing;
docs/data-server.md states the limit.

Segmenters and synthesizers are plugins (``register_segmenters`` / ``register_synthesizers``);
this module knows none of them by name.  Server workers and the ``inprocess`` transport both call
:func:`run_pipeline`, and ``syngrpo synth`` calls it for one image.

Pixel convention: a box ``(x1, y1, x2, y2)`` covers every pixel whose unit square
``[c, c+1) x [r, r+1)`` overlaps it, so a fractional box edge keeps the whole border pixel: the
conservative choice for label preservation.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from syngrpo.types import Box

#: a segmented box whose foreground covers less than this share of it keeps the whole box
DEFAULT_MIN_FOREGROUND_FRACTION = 0.05
#: mask values at or above this count as foreground (soft mattes such as BEN2's alpha)
DEFAULT_MASK_THRESHOLD = 128
#: the kept mask must cover at least this share of every labelled box, or the job fails
DEFAULT_MIN_LABEL_COVERAGE = 0.25
#: the kept mask must come this close to every side of a labelled box (a share of the box's width or height), or
#: the job fails: a tight box touches its object on all four sides
DEFAULT_MAX_LABEL_EDGE_GAP = 0.1
#: the result must keep unchanged at least this share of the labelled object's own pixels (the label segmenter's
#: mask of it on the original, at its box), or the job fails; a segmenter's answers on the object's border differ
#: by a pixel or two between views (a 40 px circle's one-pixel rim is a tenth of it)
DEFAULT_MIN_LABEL_OBJECT_COVERAGE = 0.8
#: the label segmenter sees a crop of the original around one box: the box and this share of its larger side
#: around it, at least LABEL_CROP_MIN_MARGIN pixels (the ``object`` segmenter reads the colours just outside)
LABEL_CROP_MARGIN = 0.25
LABEL_CROP_MIN_MARGIN = 4
#: a gap of this many pixels is always allowed (a fractional box edge, an anti-aliased or matted object border)
LABEL_EDGE_SLACK_PIXELS = 2


@dataclass
class SynthesisRequest:
    """What a synthesizer gets for one image.

    ``keep_mask`` is a binary ``'L'`` image (255 = keep the original pixel); the synthesizer
    repaints the rest.  It may change kept pixels too (a VAE does): they are pasted back after.
    ``options`` are the job's synthesizer options (``steps``, ``guidance_scale``, ...), already
    stripped of the ``synthesizer`` name.
    """

    image: Image.Image
    keep_mask: Image.Image
    boxes: list[Box]
    labels: list[str]
    description: str
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Segmenter(Protocol):
    """Finds the foreground of images; a plugin registered with ``register_segmenters``."""

    def segment(self, images: list[Image.Image], boxes: list[list[Box]]) -> list[Image.Image]:
        """One ``'L'`` mask per image, the image's size, 255 = foreground (soft values allowed).

        ``boxes[i]`` are the labelled boxes of ``images[i]``; segmenters that take prompts (SAM)
        use them, others (BEN2) may ignore them: the pipeline intersects with the boxes anyway.
        """
        ...


@runtime_checkable
class Synthesizer(Protocol):
    """Repaints the background of images; a plugin registered with ``register_synthesizers``.

    ``max_batch_size`` is how many requests one ``synthesize`` call may take (a diffusion model
    batches well on a GPU; the server groups queued jobs up to this size).
    """

    max_batch_size: int

    def synthesize(self, requests: list[SynthesisRequest]) -> list[Image.Image]:
        """One new RGB image per request, in order (ideally the request image's size)."""
        ...


@dataclass
class PipelineItem:
    """One job's input to :func:`run_pipeline`."""

    image: Image.Image
    boxes: list[Box]
    labels: list[str]
    description: str
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineOutcome:
    """One job's output: the new image and the mask that was kept, or why there is none."""

    image: Image.Image | None = None
    keep_mask: Image.Image | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None


# --------------------------------------------------------------------------- masks


def box_pixel_bounds(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel index bounds ``(c1, r1, c2, r2)`` (end exclusive) of the pixels a box overlaps, clipped."""
    x1, y1, x2, y2 = (float(v) for v in box)
    c1 = max(0, min(width, math.floor(x1)))
    r1 = max(0, min(height, math.floor(y1)))
    c2 = max(0, min(width, math.ceil(x2)))
    r2 = max(0, min(height, math.ceil(y2)))
    return c1, r1, max(c1, c2), max(r1, r2)


def boxes_mask(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> Image.Image:
    """A binary ``'L'`` mask (255 inside any box) of ``size = (width, height)``."""
    width, height = size
    arr = np.zeros((height, width), dtype=np.uint8)
    for box in boxes:
        c1, r1, c2, r2 = box_pixel_bounds(box, width, height)
        arr[r1:r2, c1:c2] = 255
    return Image.fromarray(arr, mode="L")


def keep_mask(
    seg_mask: Image.Image,
    boxes: Sequence[Sequence[float]],
    size: tuple[int, int],
    *,
    threshold: int = DEFAULT_MASK_THRESHOLD,
    min_foreground_fraction: float = DEFAULT_MIN_FOREGROUND_FRACTION,
) -> Image.Image:
    """The pixels to keep: segmented foreground within the labelled boxes (paper §3.3.1).

    A box in which the segmenter found (almost) no foreground keeps the whole box: repainting a
    labelled object away would make its label wrong, so when in doubt the box is kept.
    Returns a binary ``'L'`` mask (0 or 255) of ``size = (width, height)``.
    """
    width, height = size
    seg = seg_mask.convert("L")
    if seg.size != (width, height):
        seg = seg.resize((width, height), Image.Resampling.NEAREST)
    fg = np.asarray(seg) >= threshold
    keep = np.zeros((height, width), dtype=bool)
    for box in boxes:
        c1, r1, c2, r2 = box_pixel_bounds(box, width, height)
        if c2 <= c1 or r2 <= r1:
            continue
        region = fg[r1:r2, c1:c2]
        if region.mean() < min_foreground_fraction:
            keep[r1:r2, c1:c2] = True
        else:
            keep[r1:r2, c1:c2] |= region
    return Image.fromarray(np.where(keep, 255, 0).astype(np.uint8), mode="L")


def paste_back(original: Image.Image, generated: Image.Image, keep: Image.Image) -> Image.Image:
    """The generated image with the original's pixels wherever ``keep`` is set (exact copy).

    A generated image of another size is resized to the original's first (outpainters work at
    their own resolution).
    """
    orig = original.convert("RGB")
    gen = generated.convert("RGB")
    if gen.size != orig.size:
        gen = gen.resize(orig.size, Image.Resampling.BICUBIC)
    mask = np.asarray(keep.convert("L")) >= DEFAULT_MASK_THRESHOLD
    out = np.where(mask[..., None], np.asarray(orig), np.asarray(gen))
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def verify_labelled_regions(
    original: Image.Image,
    result: Image.Image,
    boxes: Sequence[Sequence[float]],
    keep: Image.Image | None = None,
) -> bool:
    """True when every kept pixel of every labelled box equals the original's.

    With ``keep`` (the mask the pipeline kept) only the kept foreground inside the boxes is
    compared; without it, every pixel of every box.  Sizes must match.
    """
    if original.size != result.size:
        return False
    region = np.asarray(boxes_mask(boxes, original.size)) > 0
    if keep is not None:
        km = keep.convert("L")
        if km.size != original.size:
            return False
        region &= np.asarray(km) >= DEFAULT_MASK_THRESHOLD
    a = np.asarray(original.convert("RGB"))
    b = np.asarray(result.convert("RGB"))
    return bool(np.array_equal(a[region], b[region]))


def label_edge_gaps(kept: np.ndarray) -> tuple[int, int, int, int]:
    """Pixels between each side of a box's region and the nearest kept pixel: (left, top, right, bottom).

    ``kept`` is the box's (rows, cols) boolean keep mask, with at least one kept pixel.
    """
    rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    height, width = kept.shape
    return int(cols[0]), int(rows[0]), int(width - 1 - cols[-1]), int(height - 1 - rows[-1])


def label_object_masks(
    segmenter: Segmenter,
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    *,
    threshold: int = DEFAULT_MASK_THRESHOLD,
) -> list[np.ndarray | None]:
    """Each labelled object's own pixels on the original, as ``segmenter`` sees it at its box.

    For every box, ``segmenter`` gets a crop of ``image`` around that box alone (the box and a margin of
    :data:`LABEL_CROP_MARGIN` of its larger side, at least :data:`LABEL_CROP_MIN_MARGIN` pixels, clipped to the
    image) with the box, in the crop's coordinates, as its only box; one call for all the boxes of a job.  Returns
    per box its ``(rows, cols)`` boolean mask over the box's pixels (:func:`box_pixel_bounds`), ``None`` for a
    box with no pixel in the image.  A mask of another size than its crop is resized (nearest), as
    :func:`keep_mask` does.
    """
    crops, prompts, where = _label_crops(image, boxes)
    masks = segmenter.segment(crops, prompts) if crops else []
    return _label_masks_from(crops, list(masks), where, threshold)


_Where = tuple[int, int, int, int, int, int]


def _label_crops(image: Image.Image, boxes: Sequence[Sequence[float]]
                 ) -> tuple[list[Image.Image], list[list[Box]], list[_Where | None]]:
    """The crops and box prompts :func:`label_object_masks` asks for, and where each box lies in its crop."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    crops: list[Image.Image] = []
    prompts: list[list[Box]] = []
    where: list[_Where | None] = []
    for box in boxes:
        c1, r1, c2, r2 = box_pixel_bounds(box, width, height)
        if c2 <= c1 or r2 <= r1:
            where.append(None)
            continue
        margin = max(LABEL_CROP_MIN_MARGIN, math.ceil(LABEL_CROP_MARGIN * max(c2 - c1, r2 - r1)))
        x0, y0 = max(0, c1 - margin), max(0, r1 - margin)
        x1, y1 = min(width, c2 + margin), min(height, r2 + margin)
        x_1, y_1, x_2, y_2 = (float(v) for v in box)
        crops.append(rgb.crop((x0, y0, x1, y1)))
        prompts.append([(x_1 - x0, y_1 - y0, x_2 - x0, y_2 - y0)])
        where.append((x0, y0, c1, r1, c2, r2))
    return crops, prompts, where


def _label_masks_from(crops: Sequence[Image.Image], masks: Sequence[Image.Image], where: Sequence[_Where | None],
                      threshold: int) -> list[np.ndarray | None]:
    if len(masks) != len(crops):
        raise ValueError(f"the label segmenter returned {len(masks)} masks for {len(crops)} crops")
    out: list[np.ndarray | None] = []
    it = iter(zip(crops, masks, strict=True))
    for w in where:
        if w is None:
            out.append(None)
            continue
        crop, mask = next(it)
        m = mask.convert("L")
        if m.size != crop.size:
            m = m.resize(crop.size, Image.Resampling.NEAREST)
        x0, y0, c1, r1, c2, r2 = w
        out.append(np.asarray(m)[r1 - y0 : r2 - y0, c1 - x0 : c2 - x0] >= threshold)
    return out


def _label_objects_all(segmenter: Segmenter, items: Sequence[PipelineItem], threshold: int
                       ) -> list[list[np.ndarray | None] | _Failed]:
    """:func:`label_object_masks` of every item in one segmenter call (a GPU segmenter batches the crops of all
    the jobs); if that call fails, job by job, so one bad job fails alone (as :func:`_segment_all`)."""
    asked = [_label_crops(it.image, it.boxes) for it in items]
    crops = [c for cs, _, _ in asked for c in cs]
    prompts = [p for _, ps, _ in asked for p in ps]
    try:
        masks = list(segmenter.segment(crops, prompts)) if crops else []
        if len(masks) != len(crops):
            raise ValueError(f"the label segmenter returned {len(masks)} masks for {len(crops)} crops")
        out: list[list[np.ndarray | None] | _Failed] = []
        start = 0
        for cs, _, where in asked:
            out.append(_label_masks_from(cs, masks[start : start + len(cs)], where, threshold))
            start += len(cs)
        return out
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything, or hand back unusable masks
        if len(items) == 1:
            return [_describe("label segmentation", exc)]
    alone: list[list[np.ndarray | None] | _Failed] = []
    for it in items:
        try:
            alone.append(label_object_masks(segmenter, it.image, it.boxes, threshold=threshold))
        except Exception as exc:  # noqa: BLE001
            alone.append(_describe("label segmentation", exc))
    return alone


def check_labelled_objects(
    original: Image.Image,
    result: Image.Image,
    boxes: Sequence[Sequence[float]],
    keep: Image.Image,
    *,
    min_coverage: float = DEFAULT_MIN_LABEL_COVERAGE,
    max_edge_gap: float = DEFAULT_MAX_LABEL_EDGE_GAP,
    objects: Sequence[np.ndarray | None] | None = None,
    min_object_coverage: float = DEFAULT_MIN_LABEL_OBJECT_COVERAGE,
) -> str | None:
    """Why ``result`` does not preserve every labelled object of ``original``, or None when it does.

    For each labelled box (clipped to the image; a box with no pixel inside it is skipped):

    * ``keep`` must cover at least ``min_coverage`` of the box's pixels (a segmenter that kept
      an occluder instead of the object covers a sliver of it);
    * ``keep`` must reach every side of the box, to within ``max_edge_gap`` of the box's width
      (left and right) or height (top and bottom), or :data:`LABEL_EDGE_SLACK_PIXELS`, whichever is
      larger: the labelled object touches every side of its tight box, so a side the kept pixels do
      not reach had object pixels that were repainted (``max_edge_gap=1`` turns this rule off, for boxes
      drawn loosely);
    * with ``objects`` (:func:`label_object_masks`: per box, the labelled object's own pixels on the original),
      at least ``min_object_coverage`` of the object's pixels must be kept *and* unchanged in ``result`` (a
      wrong mask that reaches every side -- a frame, an object behind this one -- keeps few of them; an
      object the label segmenter did not find at all fails too: there is nothing to check the label against;
      ``min_object_coverage=0`` turns the rule off); and
    * every kept pixel of the box must be the original's, compared on the images themselves.
    """
    if original.size != result.size:
        return f"label check failed: result is {result.size}, the original {original.size}"
    km = keep.convert("L")
    if km.size != original.size:
        return f"label check failed: keep mask is {km.size}, the original {original.size}"
    width, height = original.size
    kept = np.asarray(km) >= DEFAULT_MASK_THRESHOLD
    same = np.all(np.asarray(original.convert("RGB")) == np.asarray(result.convert("RGB")), axis=-1)
    for n, box in enumerate(boxes):
        c1, r1, c2, r2 = box_pixel_bounds(box, width, height)
        if c2 <= c1 or r2 <= r1:
            continue
        region = kept[r1:r2, c1:c2]
        coverage = float(region.mean())
        if coverage < min_coverage or not region.any():
            return (f"label check failed: box {n} {tuple(box)} keeps {coverage:.0%} of its pixels, "
                    f"under min_label_coverage {min_coverage:.0%} (did the segmenter keep another object?)")
        across = max(LABEL_EDGE_SLACK_PIXELS, max_edge_gap * (c2 - c1))  # allowed gap at the left and right
        down = max(LABEL_EDGE_SLACK_PIXELS, max_edge_gap * (r2 - r1))  # at the top and bottom
        for side, gap, limit in zip(("left", "top", "right", "bottom"), label_edge_gaps(region),
                                    (across, down, across, down), strict=True):
            if gap > limit:
                return (f"label check failed: box {n} {tuple(box)} keeps nothing within {gap} px of its {side} side "
                        f"(max_label_edge_gap {max_edge_gap:.0%} of the box allows {limit:.0f}): the labelled object "
                        "touches every side of its box, so its pixels on that side would be repainted (did the "
                        "segmenter keep another object, or part of this one?)")
        obj = None if objects is None or min_object_coverage <= 0 else objects[n]
        if obj is not None:
            if obj.shape != region.shape:
                return f"label check failed: the label mask of box {n} is {obj.shape}, the box {region.shape}"
            if not obj.any():
                return (f"label check failed: box {n} {tuple(box)}: the label segmenter found no object at the box on "
                        "the original, so the kept pixels cannot be checked against it (set label_segmenter to one "
                        "that finds it, or min_label_object_coverage 0 to skip this rule)")
            held = float((obj & region & same[r1:r2, c1:c2]).sum() / obj.sum())
            if held < min_object_coverage:
                return (f"label check failed: box {n} {tuple(box)} keeps {held:.0%} of the labelled object's own "
                        f"pixels (the label segmenter's mask of it on the original, at the box), under "
                        f"min_label_object_coverage {min_object_coverage:.0%}: the rest would be repainted (did the "
                        "segmenter keep another object, or a part of this one?)")
        changed = int((region & ~same[r1:r2, c1:c2]).sum())
        if changed:
            return f"label check failed: {changed} kept pixels of box {n} {tuple(box)} differ from the original"
    return None
# --------------------------------------------------------------------------- job limits
#
# The data server takes jobs from clients it does not control.  Two guards keep one client's jobs
# from occupying a worker for ever: per-job options a synthesizer declares with bounds (checked at
# submission, so ``{"distractors": 40000}`` is a 422, not a 40-minute job), and a deadline that a
# long-running synthesizer checks between units of work (a drawn shape, a diffusion step), so a
# timed-out call stops instead of burning a core after its job was failed.

_deadline = threading.local()


class DeadlineExceeded(Exception):
    """The job's time ran out; raised by :func:`check_deadline` inside a synthesizer or segmenter."""


@contextmanager
def job_deadline(seconds: float | None) -> Iterator[None]:
    """Within this block (in this thread), :func:`check_deadline` raises once ``seconds`` have passed."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = None if seconds is None else time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = previous


def check_deadline() -> None:
    """Raise :class:`DeadlineExceeded` when the current job's deadline has passed (cheap; call it often).

    Outside a job (``syngrpo synth``, tests) there is no deadline and this does nothing.
    """
    at = getattr(_deadline, "at", None)
    if at is not None and time.monotonic() > at:
        raise DeadlineExceeded("timed out: the job's time-out passed; stopped")


def job_options_model(factory: Any) -> Any:
    """The pydantic model a synthesizer factory declares for its per-job options, or ``None``.

    A synthesizer plugin declares its options by setting ``job_options`` on the factory it
    registers (a pydantic model with ``extra="forbid"`` and bounded fields); the server validates
    every job's ``options`` (less ``synthesizer``) against it at submission.  A synthesizer that
    declares nothing takes any options (then only the job time-out bounds its work).
    """
    return getattr(factory, "job_options", None)


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class _Failed:
    """A pipeline stage's failure for one item (kept apart from any value a plugin could return)."""

    reason: str


def _describe(stage: str, exc: BaseException) -> _Failed:
    text = str(exc).strip() or "(no message)"
    return _Failed(f"{stage} failed: {type(exc).__name__}: {text}"[:2000])


def _check_images(images: Sequence[Any], what: str) -> None:
    for im in images:
        if not isinstance(im, Image.Image):
            raise TypeError(f"{what} returned a {type(im).__name__}, not a PIL image")


def _segment_all(segmenter: Segmenter, items: Sequence[PipelineItem]) -> list[Image.Image | _Failed]:
    """Masks for all items in one call; if that call fails, item by item so one bad image fails alone."""

    def call(group: Sequence[PipelineItem]) -> list[Image.Image]:
        masks = segmenter.segment([it.image for it in group], [list(it.boxes) for it in group])
        if len(masks) != len(group):
            raise RuntimeError(f"segmenter returned {len(masks)} masks for {len(group)} images")
        _check_images(masks, "segmenter")
        return list(masks)

    try:
        return list(call(items))
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; it fails its jobs only
        if len(items) == 1:
            return [_describe("segmentation", exc)]
    out: list[Image.Image | _Failed] = []
    for it in items:
        try:
            out.append(call([it])[0])
        except Exception as exc:  # noqa: BLE001
            out.append(_describe("segmentation", exc))
    return out


def _synthesize_all(synthesizer: Synthesizer, requests: Sequence[SynthesisRequest]) -> list[Image.Image | _Failed]:
    """Outputs in chunks of ``max_batch_size``; a failing chunk is retried one request at a time."""

    def call(group: Sequence[SynthesisRequest]) -> list[Image.Image]:
        images = synthesizer.synthesize(list(group))
        if len(images) != len(group):
            raise RuntimeError(f"synthesizer returned {len(images)} images for {len(group)} requests")
        _check_images(images, "synthesizer")
        return list(images)

    size = max(1, int(getattr(synthesizer, "max_batch_size", 1) or 1))
    out: list[Image.Image | _Failed] = []
    for start in range(0, len(requests), size):
        chunk = requests[start : start + size]
        try:
            check_deadline()
            out.extend(call(chunk))
            continue
        except Exception as exc:  # noqa: BLE001
            if len(chunk) == 1:
                out.append(_describe("synthesis", exc))
                continue
        for req in chunk:
            try:
                check_deadline()
                out.append(call([req])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(_describe("synthesis", exc))
    return out


def run_pipeline(
    items: Sequence[PipelineItem],
    *,
    segmenter: Segmenter,
    synthesizer: Synthesizer,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    min_foreground_fraction: float = DEFAULT_MIN_FOREGROUND_FRACTION,
    min_label_coverage: float = DEFAULT_MIN_LABEL_COVERAGE,
    max_label_edge_gap: float = DEFAULT_MAX_LABEL_EDGE_GAP,
    label_segmenter: Segmenter | None = None,
    min_label_object_coverage: float = DEFAULT_MIN_LABEL_OBJECT_COVERAGE,
) -> list[PipelineOutcome]:
    """Segment → keep-mask → outpaint → paste back → check the labels, for a batch of jobs.

    The label check's object rule asks ``label_segmenter`` (default: ``segmenter``) for each labelled object at
    its box on the original (:func:`label_object_masks`; one segmenter call for all the jobs' crops); ``min_label_object_coverage=0`` skips
    that call.  The rules that need no result (the keep mask's sides, its share of the box, the object's pixels)
    are checked before synthesis too, so a job they fail costs no synthesizer call.

    Never raises for a plugin's failure: each item gets an outcome with either the new image or
    the reason it has none, so one bad job never fails its batch-mates.
    """
    items = list(items)
    if not items:
        return []
    outcomes = [PipelineOutcome() for _ in items]
    images = [it.image.convert("RGB") for it in items]
    items = [PipelineItem(img, list(it.boxes), list(it.labels), it.description, it.seed, dict(it.options))
             for img, it in zip(images, items, strict=True)]

    masks = _segment_all(segmenter, items)
    objects: list[list[np.ndarray | None] | None] = [None] * len(items)
    requests: list[SynthesisRequest] = []
    index: list[int] = []
    kept: list[int] = []  # the jobs with a usable keep mask, in order
    for i, (it, seg) in enumerate(zip(items, masks, strict=True)):
        if isinstance(seg, _Failed):
            outcomes[i].error = seg.reason
            continue
        try:
            km = keep_mask(seg, it.boxes, it.image.size, threshold=mask_threshold,
                           min_foreground_fraction=min_foreground_fraction)
        except Exception as exc:  # noqa: BLE001 - a malformed mask from a plugin
            outcomes[i].error = _describe("segmentation", exc).reason
            continue
        outcomes[i].keep_mask = km
        kept.append(i)
    if min_label_object_coverage > 0 and kept:  # one call for every job's crops
        asked = _label_objects_all(label_segmenter or segmenter, [items[i] for i in kept], mask_threshold)
        for i, found in zip(list(kept), asked, strict=True):
            if isinstance(found, _Failed):
                outcomes[i].error = found.reason
                kept.remove(i)
            else:
                objects[i] = found
    for i in kept:
        it, km = items[i], outcomes[i].keep_mask
        assert km is not None
        early = check_labelled_objects(it.image, it.image, it.boxes, km, min_coverage=min_label_coverage,
                                       max_edge_gap=max_label_edge_gap, objects=objects[i],
                                       min_object_coverage=min_label_object_coverage)
        if early is not None:  # fails whatever the synthesizer paints: do not ask it
            outcomes[i].error = early
            continue
        requests.append(SynthesisRequest(it.image, km, it.boxes, it.labels, it.description, it.seed, it.options))
        index.append(i)

    for i, generated in zip(index, _synthesize_all(synthesizer, requests), strict=True):
        if isinstance(generated, _Failed):
            outcomes[i].error = generated.reason
            continue
        it, km = items[i], outcomes[i].keep_mask
        assert km is not None
        try:
            result = paste_back(it.image, generated, km)
        except Exception as exc:  # noqa: BLE001 - e.g. a synthesizer returned something that is no image
            outcomes[i].error = _describe("paste-back", exc).reason
            continue
        failure = check_labelled_objects(it.image, result, it.boxes, km, min_coverage=min_label_coverage,
                                         max_edge_gap=max_label_edge_gap, objects=objects[i],
                                         min_object_coverage=min_label_object_coverage)
        if failure is not None:
            outcomes[i].error = failure
            continue
        outcomes[i].image = result
    return outcomes


def side_by_side(panels: Sequence[Image.Image], gap: int = 4, background: tuple[int, int, int] = (255, 255, 255)
                 ) -> Image.Image:
    """Panels (e.g. original | mask | result) next to each other in one RGB image."""
    rgb = [p.convert("RGB") for p in panels]
    width = sum(p.width for p in rgb) + gap * max(0, len(rgb) - 1)
    height = max((p.height for p in rgb), default=1)
    canvas = Image.new("RGB", (max(1, width), height), background)
    x = 0
    for p in rgb:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return canvas
