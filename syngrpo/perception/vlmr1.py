"""VLM-R1's answer parsing and scoring rules: the ``vlmr1`` metric profile of REC and OVD.

The paper compares with numbers computed the way VLM-R1 computes them (its reward code, commit
90052f4).  The project's default parsing is more forgiving (docs/tasks/rec.md, ovd.md); the maths
after parsing agree (REFERENCE.md: 630 cases to 1e-15).  This module restates VLM-R1's *rules*
so that a run can be scored exactly as a VLM-R1 run is -- written from its documented behaviour,
not copied:

REC (its ``iou_reward``)
    The **first** ``<answer>...</answer>`` block; in it the first match of the integers-only
    pattern ``[x1, y1, x2, y2]`` (digits only, ``,`` then optional whitespace; floats, signs and
    other spacing do not match).  IoU with inclusive pixels: the intersection's far corners are
    moved by -1 and its size by +1, so two boxes must overlap by more than one pixel on each
    axis; the union uses the plain areas.  Nothing is clipped and the corners are not
    reordered, so an inverted box never matches.

OVD (its ``odLength_reward``)
    The **last** answer block, and in it the **last** ```` ```json ... ``` ```` fence; no fence,
    or JSON that does not load, is an empty prediction list.  The AP is COCO AP@[.5:.95] on the
    items whose ``label`` *equals* a ground-truth label (others are dropped, as a KeyError drops
    them there) and whose ``bbox_2d`` holds four numbers; the length factor
    ``min(1, N_gt / N_pred)`` counts *every* item of the list.  No prediction and no ground
    truth (a ground truth of "None") scores 1.0; exactly one of them empty scores 0.0; no kept
    item scores 0.0.

Every function here takes any text and never raises.  Where VLM-R1 itself would raise (and its
``try`` score 0) the result is 0 here too; where it would hand pycocotools a non-finite number,
the item is dropped here (a documented deviation: pycocotools' result is undefined there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from syngrpo.perception.coco_group import GroupArrays, coco_ap_batch_arrays
from syngrpo.perception.detection import coco_ap, coco_ap_dataset, greedy_match
from syngrpo.perception.geometry import ImageTransform

__all__ = [
    "PROFILES",
    "answer_blocks",
    "check_profile",
    "json_fence_items",
    "ovd_dataset_metrics",
    "ovd_kept",
    "ovd_reward",
    "ovd_reward_group",
    "rec_box",
    "rec_iou",
    "unclipped_box",
]

#: the metric profiles a REC or OVD task accepts
PROFILES = ("default", "vlmr1")

_OPEN, _CLOSE = "<answer>", "</answer>"
_FENCE_OPEN, _FENCE = "```json", "```"
#: VLM-R1's REC box: digits only, a comma then optional whitespace between them
_INT_BOX = re.compile(r"\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)]")


def check_profile(profile: str) -> str:
    """The profile name, or ValueError naming the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return profile


def answer_blocks(text: str | None) -> list[str]:
    """Stripped contents of every ``<answer>...</answer>`` (non-overlapping, left to right).

    The same blocks as ``re.findall(r'<answer>(.*?)</answer>', text, re.DOTALL)``, found with
    ``str.find`` so a long text without closing tags costs linear time.
    """
    if not isinstance(text, str):
        return []
    out, pos = [], 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            return out
        end = text.find(_CLOSE, start + len(_OPEN))
        if end < 0:  # no closing tag after this opening: none after any later one either
            return out
        out.append(text[start + len(_OPEN) : end].strip())
        pos = end + len(_CLOSE)


def rec_box(answer: str | None) -> tuple[int, int, int, int] | None:
    """The first integers-only ``[x1, y1, x2, y2]`` in an answer block's content, or None."""
    if not isinstance(answer, str):
        return None
    match = _INT_BOX.search(answer)
    if match is None:
        return None
    try:
        return tuple(int(g) for g in match.groups())  # type: ignore[return-value]
    except ValueError:  # more digits than int() accepts: VLM-R1's try scores it 0
        return None


def rec_iou(pred: Sequence[float], gt: Sequence[float]) -> float:
    """VLM-R1's REC IoU (inclusive pixels, no clipping); 0 where it would divide by zero. In [0, 1]."""
    try:
        ix1, iy1 = max(pred[0], gt[0]), max(pred[1], gt[1])
        ix2, iy2 = min(pred[2] - 1, gt[2] - 1), min(pred[3] - 1, gt[3] - 1)
        inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0.0
        union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
        value = float(inter) / float(union)
    except (ZeroDivisionError, OverflowError, TypeError, IndexError, ValueError):
        return 0.0
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, value))  # a negative union (inverted box, no overlap) gives -0.0


def unclipped_box(box: Sequence[float], frame: ImageTransform) -> tuple[float, float, float, float]:
    """A box's corners mapped by ``frame``: not clipped, not reordered (an inverted box stays so)."""
    x1, y1 = frame.point(float(box[0]), float(box[1]))
    x2, y2 = frame.point(float(box[2]), float(box[3]))
    return (x1, y1, x2, y2)


def json_fence_items(answer: str | None) -> list[Any]:
    """The items of the last ```` ```json ... ``` ```` fence of an answer, as VLM-R1 reads them.

    No fence, or content ``json.loads`` rejects, is ``[]``.  The loaded value is iterated as
    VLM-R1 iterates it: a list gives its items, an object its keys, a string its characters
    (all of which are dropped later but counted by the length factor); a number, ``true`` or
    ``null`` is ``[]``.
    """
    if not isinstance(answer, str):
        return []
    content, pos = None, 0
    while True:
        start = answer.find(_FENCE_OPEN, pos)
        if start < 0:
            break
        end = answer.find(_FENCE, start + len(_FENCE_OPEN))
        if end < 0:
            break
        content = answer[start + len(_FENCE_OPEN) : end]
        pos = end + len(_FENCE)
    if content is None:
        return []
    try:
        value = json.loads(content.strip())
    except (ValueError, RecursionError):
        return []
    if isinstance(value, (list, dict, str)):
        return list(value)
    return []


def _number(v: Any) -> float | None:
    if not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def ovd_kept(items: Sequence[Any], gt_labels: Sequence[str], frame: ImageTransform | None = None
             ) -> list[dict[str, Any]]:
    """The items VLM-R1's AP sees: a dict whose ``label`` equals a ground-truth label (exactly)
    and whose ``bbox_2d`` starts with four finite numbers; boxes mapped by ``frame``, unclipped."""
    known = set(gt_labels)
    kept = []
    for item in items:
        if not isinstance(item, dict):
            continue
        label, box = item.get("label"), item.get("bbox_2d")
        if not isinstance(label, str) or label not in known or not isinstance(box, list) or len(box) < 4:
            continue
        values = [_number(v) for v in box[:4]]
        if any(v is None for v in values):
            continue
        mapped = unclipped_box(values, frame) if frame is not None else tuple(values)  # type: ignore[arg-type]
        if all(math.isfinite(v) for v in mapped):
            kept.append({"bbox_2d": list(mapped), "label": label})
    return kept


def _relabel(objects: Sequence[Mapping[str, Any]], ids: dict[str, str]) -> list[dict[str, Any]]:
    """Labels replaced by opaque ids, so that the AP code's case/space folding cannot merge two
    labels that differ only in case (the vlmr1 profile compares labels exactly)."""
    return [{"bbox_2d": [float(v) for v in o["bbox_2d"]], "label": ids.setdefault(o["label"], f"c{len(ids)}")}
            for o in objects]


def ovd_reward(items: Sequence[Any] | None, gts: Sequence[Mapping[str, Any]],
               frame: ImageTransform | None = None) -> float:
    """VLM-R1's ``odLength_reward`` of a parsed answer (``None``: no answer block); in [0, 1]."""
    if items is None:
        return 0.0
    n_pred, n_gt = len(items), len(gts)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kept = ovd_kept(items, [o["label"] for o in gts], frame)
    if not kept:
        return 0.0
    ids: dict[str, str] = {}
    gt_ids = _relabel(gts, ids)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e308-sized boxes: IoU 0, as pycocotools
            ap = coco_ap(gt_ids, _relabel(kept, ids), drop_unknown_labels=True)
    except ValueError:
        return 0.0
    value = ap * (1.0 if n_gt >= n_pred else n_gt / n_pred)
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def ovd_reward_group(items_per_completion: Sequence[Sequence[Any] | None], gts: Sequence[Mapping[str, Any]],
                     frame: ImageTransform | None = None) -> list[float]:
    """:func:`ovd_reward` of each of a GRPO group's completions (they share ``gts`` and ``frame``).

    The kept items go straight into arrays and the AP of the whole group comes from one call of
    :func:`~syngrpo.perception.coco_group.coco_ap_batch_arrays`, instead of one
    :func:`~syngrpo.perception.detection.coco_ap` per completion; the values are the same.
    """
    return ovd_reward_batch([(items_per_completion, gts, frame)])[0]


def ovd_reward_batch(groups: Sequence[tuple[Sequence[Sequence[Any] | None], Sequence[Mapping[str, Any]],
                                            ImageTransform | None]]) -> list[list[float]]:
    """:func:`ovd_reward_group` of every ``(items per completion, gts, frame)`` group of a batch.

    The AP of all groups comes from one pass of
    :func:`~syngrpo.perception.coco_group.coco_ap_batch_arrays` (per chunk of 4096 detections), so
    the ~40 numpy calls of a pass are paid once per batch rather than once per group.  A group whose
    ground truth is malformed is scored one completion at a time, as :func:`ovd_reward` does.
    """
    out, pending = [], []
    for items_per_completion, gts, frame in groups:
        values, todo, scale, arrays = _group_arrays(items_per_completion, gts, frame)
        if arrays is None and todo:  # a malformed ground truth: one completion at a time, as before
            values = [ovd_reward(items, gts, frame) for items in items_per_completion]
        elif todo:
            pending.append((len(out), todo, scale, arrays))
        out.append(values)
    if pending:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e308-sized boxes: IoU 0, as pycocotools
            all_aps = coco_ap_batch_arrays([p[3] for p in pending])
        for (j, todo, scale, _), aps in zip(pending, all_aps, strict=True):
            for i, ap, s in zip(todo, aps, scale, strict=True):
                value = ap * s
                out[j][i] = min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
    return out


def _group_arrays(items_per_completion: Sequence[Sequence[Any] | None], gts: Sequence[Mapping[str, Any]],
                  frame: ImageTransform | None) -> tuple[list[float], list[int], list[float], GroupArrays | None]:
    """(values so far, completions left to the AP, their redundancy scales, the group's arrays or None).

    None when the ground truth cannot be read into arrays.
    """
    n_gt = len(gts)
    out = [0.0] * len(items_per_completion)
    cat_of = {label: i for i, label in enumerate(dict.fromkeys(o["label"] for o in gts))}
    todo, dets, scale = [], [], []
    for i, items in enumerate(items_per_completion):
        if items is None:
            continue
        n_pred = len(items)
        if n_pred == 0 or n_gt == 0:
            out[i] = 1.0 if n_pred == n_gt else 0.0
            continue
        boxes, cats = [], []
        for item in items:
            if not isinstance(item, dict):
                continue
            label, box = item.get("label"), item.get("bbox_2d")
            cat = cat_of.get(label) if isinstance(label, str) else None
            if cat is None or not isinstance(box, list) or len(box) < 4:
                continue
            # a float needs no check here: a non-finite one makes its row non-finite, dropped below as _number drops it
            values = [v if type(v) is float else _number(v) for v in box[:4]]
            if None not in values:
                boxes.append(values)
                cats.append(cat)
        if not boxes:
            continue
        arr = np.array(boxes, dtype=np.float64)
        if frame is not None:  # as unclipped_box: x * sx + tx, corners kept as written
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr * np.array([frame.sx, frame.sy, frame.sx, frame.sy]) + np.array(
                    [frame.tx, frame.ty, frame.tx, frame.ty])
        finite = np.isfinite(arr).all(axis=1)
        if not finite.any():
            continue
        todo.append(i)
        dets.append((arr[finite], np.array(cats, dtype=np.int64)[finite], None))
        scale.append(1.0 if n_gt >= n_pred else n_gt / n_pred)
    if not todo:
        return out, todo, scale, None
    try:
        g_boxes = np.array([[float(v) for v in o["bbox_2d"]] for o in gts], dtype=np.float64).reshape(n_gt, 4)
        g_cats = np.array([cat_of[o["label"]] for o in gts], dtype=np.int64)
    except (ValueError, TypeError, KeyError):
        return out, todo, scale, None
    return out, todo, scale, GroupArrays(g_boxes, g_cats, len(cat_of), dets)


def ovd_dataset_metrics(items_per_image: Sequence[Sequence[Any] | None],
                        gts_per_image: Sequence[Sequence[Mapping[str, Any]]],
                        frames: Sequence[ImageTransform | None]) -> dict[str, float]:
    """Split metrics read the vlmr1 way: ``map`` (COCO AP over the split of the kept items),
    ``gp`` (matches at IoU 0.5 / every item written, dropped ones included), ``gr``.

    VLM-R1 publishes no OVD evaluation script; these apply its reward's parsing to the
    paper's split metrics (docs/tasks/ovd.md).
    """
    ids: dict[str, str] = {}
    gts_l, kept_l = [], []
    n_match = n_items = n_gt = 0
    for items, gts, frame in zip(items_per_image, gts_per_image, frames, strict=True):
        kept = ovd_kept(items or [], [o["label"] for o in gts], frame)
        g, k = _relabel(gts, ids), _relabel(kept, ids)
        gts_l.append(g)
        kept_l.append(k)
        with np.errstate(over="ignore", invalid="ignore"):
            n_match += len(greedy_match(g, k, 0.5)) if g and k else 0
        n_items += len(items or [])
        n_gt += len(gts)
    with np.errstate(over="ignore", invalid="ignore"):
        ap = coco_ap_dataset(gts_l, kept_l, drop_unknown_labels=True)
    gp = n_match / n_items if n_items else (1.0 if n_gt == 0 else 0.0)
    gr = n_match / n_gt if n_gt else (1.0 if n_items == 0 else 0.0)
    return {"map": ap, "gp": gp, "gr": gr}
