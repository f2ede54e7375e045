"""Detection metrics shared by the OVD and ISR tasks: COCO AP, greedy matching, eq. 3.

A detection is a plain dict ``{"bbox_2d": [x1, y1, x2, y2], "label": str, "score": float}``
(``score`` optional, 1.0 when absent, as VLM-R1 scores every predicted box).  Plain dicts
because that is what the model writes and what the dataset files hold.

``coco_ap`` is COCO's AP@[.5:.95] written directly in numpy, not a pycocotools call:
the OVD reward runs for every completion of every training step, and building COCO
objects per completion costs milliseconds.  It follows pycocotools' ``COCOeval`` for
``iouType="bbox"`` step by step (``tests/test_detection.py`` checks agreement to 1e-6):

* per image and category, detections sorted by score with a *stable* sort (ties keep the
  order they were given in), at most ``max_dets`` (100) of them;
* at each IoU threshold ``t`` in 0.50, 0.55, ..., 0.95, every detection in score order takes
  the still-free ground truth of its category with the highest IoU >= ``t`` (ties go to the
  later ground truth, as in pycocotools);
* ground truths whose area lies outside COCO's "all" range [0, 1e10] are ignored, and so
  are detections matched to them or unmatched and outside the range;
* per category, detections of all images are merged (stable sort by score, images in the
  order given), precision is made monotone and read at the 101 recall points 0, 0.01, ... 1;
* AP of a category is the mean over thresholds and recall points; mAP is the mean over
  categories.

The one deliberate difference is which categories enter the mean.  COCO averages over the
categories that have ground truth, so a prediction whose label appears nowhere in the
ground truth costs nothing.  Here, by default, every such label is a category with AP 0
that enters the mean: a hallucinated class lowers the score.  This equals pycocotools run
on ground truth to which one unreachable box of each such label was added (a box no
prediction overlaps), which is how the tests check it.  ``drop_unknown_labels=True`` gives
COCO's (and VLM-R1's) behaviour: such predictions are dropped.  Labels compare after
:func:`normalize_label` (case and runs of whitespace do not matter).

Edge cases (all functions): with no ground truth and no predictions the score is 1.0
(nothing to find, nothing claimed); with ground truth but no predictions it is 0.0; with
predictions but no ground truth it is 0.0, whatever ``drop_unknown_labels`` says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from syngrpo.perception.geometry import ImageTransform, box_area

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCO_MAX_DETS",
    "COCO_RECALL_THRESHOLDS",
    "Detection",
    "coco_ap",
    "coco_ap_dataset",
    "greedy_match",
    "iou_matrix",
    "map_detections",
    "normalize_label",
    "ovd_reward",
    "precision_recall",
    "precision_recall_dataset",
    "redundancy_scale",
]

#: IoU thresholds 0.50:0.05:0.95, built as pycocotools builds them (np.arange drifts)
COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
#: the 101 recall points at which COCO reads interpolated precision
COCO_RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.0, 101)
#: COCO keeps at most this many detections per image and category
COCO_MAX_DETS = 100
#: COCO's "all" area range; boxes outside it are ignored
_AREA_RANGE = (0.0, 1e10)


class Detection(TypedDict, total=False):
    """One box with its class label; ``score`` orders predictions (default 1.0)."""

    bbox_2d: list[float]
    label: str
    score: float


def normalize_label(label: object) -> str:
    """The form labels are compared in: lower case, single spaces, no outer spaces."""
    return " ".join(str(label).lower().split())


def redundancy_scale(n_gt: int, n_pred: int) -> float:
    """s_ovd = min(1, N_gt / N_pred) of eq. 3 of Syn-GRPO: penalises redundant predictions.

    With no predictions there is nothing redundant, so the scale is 1.0 (eq. 3 then
    multiplies an AP that is 0, or 1 when there was nothing to find).
    """
    if n_pred <= 0:
        return 1.0
    return min(1.0, max(0, n_gt) / n_pred)


def ovd_reward(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]], *,
               drop_unknown_labels: bool = False) -> float:
    """R_acc^ovd = min(1, N_gt/N_pred) * mAP, eq. 3 of Syn-GRPO; in [0, 1].

    ``N_pred`` counts every prediction given, including those that
    ``drop_unknown_labels`` removes from the AP.  An empty ground truth scores 1.0 for an
    empty prediction and 0.0 otherwise.
    """
    n_gt, n_pred = len(gts), len(preds)
    if n_gt == 0:
        return 1.0 if n_pred == 0 else 0.0
    if n_pred == 0:
        return 0.0
    return redundancy_scale(n_gt, n_pred) * coco_ap(gts, preds, drop_unknown_labels=drop_unknown_labels)


def map_detections(objects: Sequence[Mapping[str, Any]], transform: ImageTransform, *,
                   drop_vanished: bool = True) -> list[dict[str, Any]]:
    """Detection dicts after the image went through ``transform``: boxes mapped and clipped.

    Other keys are copied unchanged.  With ``drop_vanished`` an object whose box had
    an area and has none left (cropped away) is dropped: a label must not name pixels
    that are gone.  Mapping a *prediction* back to the original image keeps such
    objects (``drop_vanished=False``): a box outside the image is still a prediction,
    counted by N_pred of eq. 3 and a false positive of the AP.
    """
    out = []
    for obj in objects:
        box = [float(v) for v in obj["bbox_2d"]]
        new = list(transform.box(box))
        if drop_vanished and box_area(box) > 0 and box_area(new) <= 0:
            continue
        out.append({**obj, "bbox_2d": new})
    return out


# ---- parsing the dicts --------------------------------------------------------------


def _read(dets: Sequence[Mapping[str, Any]], what: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Boxes (n, 4), normalised labels and scores of detection dicts; ValueError if malformed."""
    n = len(dets)
    try:
        boxes = np.array([d["bbox_2d"] for d in dets], dtype=np.float64).reshape(n, 4)
        scores = np.array([d.get("score", 1.0) for d in dets], dtype=np.float64).reshape(n)
        labels = [normalize_label(d["label"]) for d in dets]
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        boxes = scores = None  # find the culprit below for a useful message
    if boxes is None or not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        for i, d in enumerate(dets):
            try:
                ok = (len(d["bbox_2d"]) == 4 and "label" in d
                      and all(math.isfinite(float(v)) for v in d["bbox_2d"])
                      and math.isfinite(float(d.get("score", 1.0))))
            except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
                ok = False
            if not ok:
                raise ValueError(f"{what}[{i}] is not a detection {{'bbox_2d': [x1, y1, x2, y2] (finite), "
                                 f"'label': str, 'score': finite float (optional)}}: {d!r}")
        raise ValueError(f"{what} holds malformed detections")  # pragma: no cover - caught above
    return boxes, labels, scores


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4): shape (n, m).

    Same arithmetic as pycocotools' ``bbIou`` (union = area_a + area_b - intersection),
    so the results agree to the last bit on integer boxes.
    """
    return _iou(np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`iou_matrix` over leading axes that broadcast: a (..., n, 4), b (..., m, 4) -> (..., n, m)."""
    iw = np.minimum(a[..., :, None, 2], b[..., None, :, 2]) - np.maximum(a[..., :, None, 0], b[..., None, :, 0])
    ih = np.minimum(a[..., :, None, 3], b[..., None, :, 3]) - np.maximum(a[..., :, None, 1], b[..., None, :, 1])
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=overlap & (union > 0))
    return out


# ---- COCO AP --------------------------------------------------------------------------


def _last_best(ok: np.ndarray, ious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``ok`` (..., G): whether any gt qualifies, and the last one of highest IoU (``ious`` broadcasts)."""
    vals = np.where(ok, ious, -1.0)
    last = ok.shape[-1] - 1 - np.argmax(vals[..., ::-1], axis=-1)
    return ok.any(axis=-1), last


def top_per_category(order: np.ndarray, cats: np.ndarray, max_dets: int) -> np.ndarray:
    """``order`` (indices, best first) cut to the first ``max_dets`` of each category, as COCOeval keeps them."""
    if len(order) <= max_dets:
        return order
    rank = np.zeros(len(order), dtype=np.int64)
    seen: dict[int, int] = {}
    for j, c in enumerate(cats[order].tolist()):
        rank[j] = seen.get(c, 0)
        seen[c] = rank[j] + 1
    return order[rank < max_dets]


def _match(gt_boxes: np.ndarray, gt_cats: np.ndarray, dets: Sequence[tuple[np.ndarray, np.ndarray]],
           thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg for every category of one image, for one or several detection lists at once.

    ``dets``: (boxes (d, 4), categories) per list, each in score order: one list for an image's
    predictions (:func:`coco_ap_dataset`), or the completions of GRPO groups
    (:mod:`syngrpo.perception.coco_group`).  The ground truth is one image's, (n, 4) boxes and (n,)
    categories shared by every list, or one per list, (L, n, 4) and (L, n) (a batch of groups, each
    list against its own sample's; rows padded with category -2, which nothing matches).  A detection
    may only match a ground truth of its own category (the IoU of other pairs is set to -1), and
    categories never compete, so one pass in global score order gives each category's own greedy
    matching; the lists never see one another (a leading list axis: the greedy pass steps through the
    k-th detection of every list together).  Returns ``tp`` and ``fp`` (T, all detections, list after
    list) and the "not ignored" flags of the ground truth, shaped as it was given.
    """
    lo, hi = _AREA_RANGE
    per_list = gt_boxes.ndim == 3
    if not per_list:  # one ground truth for every list: a leading axis of 1 that broadcasts
        gt_boxes, gt_cats = gt_boxes.reshape(1, -1, 4), gt_cats.reshape(1, -1)
    g_area = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    g_ignored = (g_area < lo) | (g_area > hi)  # (1 or L, G)
    order = np.argsort(g_ignored, axis=1, kind="mergesort")  # ignored ground truths last, as pycocotools
    gt_boxes = np.take_along_axis(gt_boxes, order[:, :, None], axis=1)
    gt_cats, g_ignored = np.take_along_axis(gt_cats, order, axis=1), np.take_along_axis(g_ignored, order, axis=1)
    n_t, n_l, n_g = len(thresholds), len(dets), gt_boxes.shape[1]
    lengths = [len(c) for _, c in dets]
    n_d = max(lengths, default=0)
    padded = any(n != n_d for n in lengths)
    if n_l == 1:  # one image's detections (coco_ap_dataset): views, no copies
        boxes = np.asarray(dets[0][0], dtype=np.float64).reshape(1, n_d, 4)
        cats = np.asarray(dets[0][1]).reshape(1, n_d)
    else:
        boxes = np.zeros((n_l, n_d, 4))
        cats = np.full((n_l, n_d), -1, dtype=np.int64)
        for i, (b, c) in enumerate(dets):
            boxes[i, : len(c)] = b
            cats[i, : len(c)] = c
    # (L, D): not padding
    valid = np.arange(n_d)[None, :] < np.asarray(lengths, dtype=np.int64).reshape(-1, 1) if padded else None
    matched = np.zeros((n_l, n_t, n_d), dtype=bool)
    d_ignored = np.zeros((n_l, n_t, n_d), dtype=bool)
    if n_d and n_g:
        ious = _iou(boxes, gt_boxes)  # (L, D, G)
        other = cats[:, :, None] != gt_cats[:, None, :]
        ious[other | ~valid[:, :, None] if valid is not None else other] = -1.0
        g_ign = np.broadcast_to(g_ignored, (n_l, n_g))
        limit = np.minimum(thresholds, 1 - 1e-10)  # (T,)
        cand = ious >= limit.min()  # (L, D, G) pairs that can match at some threshold
        if (cand.sum(axis=2) <= 1).all() and (cand.sum(axis=1) <= 1).all():
            # no detection or ground truth has two candidates: nothing competes, at any threshold
            best = ious.argmax(axis=2)  # (L, D)
            matched = ious.max(axis=2)[:, None, :] >= limit[None, :, None]  # (L, T, D)
            d_ignored = matched & np.take_along_axis(g_ign, best, axis=1)[:, None, :]
        else:
            passes = ious[:, :, None, :] >= limit[None, None, :, None]  # (L, D, T, G): every threshold test, once
            taken = np.zeros((n_l, n_t, n_g), dtype=bool)
            any_ignored = bool(g_ignored.any())
            g_index = np.arange(n_g)
            for k in np.nonzero(cand.any(axis=(0, 2)))[0]:  # detections that can match something
                iou_k = ious[:, k, None, :]  # (L, 1, G)
                ok = passes[:, k] & ~taken  # (L, T, G)
                if any_ignored:  # a regular ground truth always wins over an ignored one
                    ign = g_ign[:, None, :]
                    found, pick = _last_best(ok & ~ign, iou_k)
                    found_ig, pick_ig = _last_best(ok & ign, iou_k)
                    pick = np.where(found, pick, pick_ig)
                    found = found | found_ig
                    d_ignored[:, :, k] = found & np.take_along_axis(g_ign, pick, axis=1)
                else:
                    found, pick = _last_best(ok, iou_k)
                taken |= (g_index == pick[:, :, None]) & found[:, :, None]
                matched[:, :, k] = found
    d_area = (boxes[:, :, 2] - boxes[:, :, 0]) * (boxes[:, :, 3] - boxes[:, :, 1])
    d_ignored |= ~matched & ((d_area < lo) | (d_area > hi))[:, None, :]
    if n_l == 1:
        tp, fp = matched[0] & ~d_ignored[0], ~matched[0] & ~d_ignored[0]
    else:  # (T, all detections), list after list
        keep = valid if valid is not None else np.ones((n_l, n_d), dtype=bool)
        tp = (matched & ~d_ignored).transpose(1, 0, 2)[:, keep]
        fp = (~matched & ~d_ignored).transpose(1, 0, 2)[:, keep]
    regular = ~np.take_along_axis(g_ignored, np.argsort(order, axis=1, kind="mergesort"), axis=1)
    return tp, fp, regular if per_list else regular[0]


def _average_precision(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> float:
    """COCOeval.accumulate for one category: mean interpolated precision over (T, 101)."""
    n_t, n_d = tp.shape
    if n_d == 0:
        return 0.0
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(fp, axis=1, dtype=np.float64)
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
    # the first index whose recall reaches each recall point (searchsorted, side="left")
    idx = np.stack([np.searchsorted(r, COCO_RECALL_THRESHOLDS, side="left") for r in recall])  # (T, R)
    q = precision[np.arange(n_t)[:, None], np.minimum(idx, n_d - 1)]
    q[idx >= n_d] = 0.0  # recall points never reached have precision 0
    return float(q.sum() / q.size)


def _category_aps(scores: np.ndarray, cats: np.ndarray, tp: np.ndarray, fp: np.ndarray,
                  n_gt: np.ndarray, *, vector_limit: int = 4096) -> np.ndarray:
    """AP of every category with ground truth (``n_gt > 0``), in category order.

    Detections are merged per category in score order (stable: image order, then the order
    within the image).  Up to ``vector_limit`` detections all categories go through one set of
    array operations (segments of a sorted array); beyond, one category at a time, so memory
    stays linear in the number of detections.
    """
    n_t = tp.shape[0]
    aps = np.zeros(len(n_gt))
    valid = n_gt > 0
    cols = np.nonzero(cats < len(n_gt))[0]  # labels absent from the ground truth have no AP here
    cols = cols[valid[cats[cols]]]
    if len(cols) > vector_limit:
        for c in np.nonzero(valid)[0]:
            mine = cols[cats[cols] == c]
            mine = mine[np.argsort(-scores[mine], kind="mergesort")]
            aps[c] = _average_precision(tp[:, mine], fp[:, mine], int(n_gt[c]))
        return aps[valid]
    if len(cols) == 0:
        return aps[valid]
    order = cols[np.lexsort((-scores[cols], cats[cols]))]  # by category, then score; lexsort is stable
    c = cats[order]
    tp, fp = tp[:, order], fp[:, order]
    n_d = len(order)
    new_segment = np.empty(n_d, dtype=bool)
    new_segment[0] = True
    np.not_equal(c[1:], c[:-1], out=new_segment[1:])
    starts = np.flatnonzero(new_segment)  # (S,)
    seg = np.cumsum(new_segment) - 1  # (D,) segment of each column
    n_seg = len(starts)
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)  # (T, D)
    fp_sum = np.cumsum(fp, axis=1, dtype=np.float64)
    if n_seg > 1:  # restart the running sums at each segment
        tp_sum -= (tp_sum[:, starts - 1] * (starts > 0))[:, seg]
        fp_sum -= (fp_sum[:, starts - 1] * (starts > 0))[:, seg]
    recall = tp_sum / n_gt[c][None, :]
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    # monotone envelope inside each segment: offsets that grow towards earlier segments stop the
    # running max of the reversed array from leaking across a segment boundary (precision is in [0, 1])
    offset = 2.0 * (n_seg - 1 - seg)[None, :]
    precision = np.maximum.accumulate((precision + offset)[:, ::-1], axis=1)[:, ::-1] - offset
    # recall point R[i] reads the first detection of its segment whose recall reaches it (searchsorted,
    # side="left"), so detection d is read by the points in (recall[d - 1], recall[d]]: m[d] - m[d - 1] of
    # them, m = number of recall points <= the recall (0 before a segment's first detection); points never
    # reached read 0.  O(T x D), where reading all 101 points of every segment was O(T x segments x 101)
    n_r = len(COCO_RECALL_THRESHOLDS)
    m = np.searchsorted(COCO_RECALL_THRESHOLDS, recall, side="right")  # (T, D)
    reads = np.diff(m, axis=1, prepend=0)
    reads[:, starts] = m[:, starts]
    aps[c[starts]] = np.bincount(seg, weights=(precision * reads).sum(axis=0), minlength=n_seg) / (n_t * n_r)
    return aps[valid]


def coco_ap_dataset(gts_per_image: Sequence[Sequence[Mapping[str, Any]]],
                    preds_per_image: Sequence[Sequence[Mapping[str, Any]]], *,
                    iou_thresholds: Sequence[float] | None = None,
                    drop_unknown_labels: bool = False,
                    max_dets: int = COCO_MAX_DETS) -> float:
    """COCO mAP@[.5:.95] over a split (one entry per image in both sequences).

    "Unknown" labels are those absent from the ground truth of the whole split; see the
    module docstring for how they count.  Raises ValueError on malformed detections.
    """
    if len(gts_per_image) != len(preds_per_image):
        raise ValueError(f"{len(gts_per_image)} ground-truth lists but {len(preds_per_image)} prediction lists")
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64)
    n_t = len(thresholds)

    read = [(_read(gts, f"ground truth of image {i}"), _read(preds, f"predictions of image {i}"))
            for i, (gts, preds) in enumerate(zip(gts_per_image, preds_per_image, strict=True))]
    gt_labels = {label for (_, g_labels, _), _ in read for label in g_labels}
    any_gt = bool(gt_labels)
    any_pred = any(p_labels for _, (_, p_labels, _) in read)
    cat_id: dict[str, int] = {label: i for i, label in enumerate(sorted(gt_labels))}
    n_known = len(cat_id)

    scores_l, cats_l, tp_l, fp_l = [], [], [], []
    n_regular = np.zeros(n_known, dtype=np.int64)
    for (g_boxes, g_labels, _), (p_boxes, p_labels, p_scores) in read:
        g_cats = np.fromiter((cat_id[label] for label in g_labels), dtype=np.int64, count=len(g_labels))
        p_cats = np.fromiter((cat_id.setdefault(label, len(cat_id)) for label in p_labels),
                             dtype=np.int64, count=len(p_labels))
        if drop_unknown_labels:
            known = p_cats < n_known
            p_boxes, p_cats, p_scores = p_boxes[known], p_cats[known], p_scores[known]
        order = top_per_category(np.argsort(-p_scores, kind="mergesort"), p_cats, max_dets)  # stable ties
        tp, fp, regular = _match(g_boxes, g_cats, [(p_boxes[order], p_cats[order])], thresholds)
        n_regular += np.bincount(g_cats[regular], minlength=n_known)[:n_known]
        scores_l.append(p_scores[order])
        cats_l.append(p_cats[order])
        tp_l.append(tp)
        fp_l.append(fp)

    scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    cats = np.concatenate(cats_l) if cats_l else np.zeros(0, dtype=np.int64)
    tp = np.concatenate(tp_l, axis=1) if tp_l else np.zeros((n_t, 0), dtype=bool)
    fp = np.concatenate(fp_l, axis=1) if fp_l else np.zeros((n_t, 0), dtype=bool)
    # categories whose ground truth is all ignored are left out, as COCO does
    aps = list(_category_aps(scores, cats, tp, fp, n_regular))
    # a label absent from the ground truth is a category with AP 0 (dropped above if asked)
    if not drop_unknown_labels:
        aps.extend([0.0] * (len(cat_id) - n_known))
    if not aps:
        return 1.0 if not (any_gt or any_pred) else 0.0
    return float(np.mean(aps))


def coco_ap(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]], *,
            iou_thresholds: Sequence[float] | None = None,
            drop_unknown_labels: bool = False,
            max_dets: int = COCO_MAX_DETS) -> float:
    """COCO mAP@[.5:.95] of one image (the mAP of eq. 3 of Syn-GRPO); in [0, 1].

    Raises ValueError on malformed detections (task code cleans model output first).
    """
    return coco_ap_dataset([gts], [preds], iou_thresholds=iou_thresholds,
                           drop_unknown_labels=drop_unknown_labels, max_dets=max_dets)


# ---- greedy matching: GP / GR ----------------------------------------------------------


def greedy_match(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
                 iou_threshold: float = 0.5, *, match_labels: bool = True) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching: ``(gt index, prediction index, IoU)`` by IoU descending.

    All pairs with IoU >= ``iou_threshold`` (and IoU > 0; with ``match_labels`` also the
    same label) are visited from the highest IoU down; a pair is kept when neither side is
    matched yet.  Equal IoUs are visited in (gt index, prediction index) order.  Scores
    play no part.  This is the matching behind GP and GR (paper §4).
    """
    g_boxes, g_labels, _ = _read(gts, "ground truth")
    p_boxes, p_labels, _ = _read(preds, "predictions")
    if not len(g_labels) or not len(p_labels):
        return []
    ious = iou_matrix(g_boxes, p_boxes)  # (G, P)
    ok = (ious >= iou_threshold) & (ious > 0)
    if match_labels:
        ok &= np.asarray(g_labels, dtype=object)[:, None] == np.asarray(p_labels, dtype=object)[None, :]
    gi, pi = np.nonzero(ok)
    vals = ious[gi, pi]
    order = np.lexsort((pi, gi, -vals))
    used_g: set[int] = set()
    used_p: set[int] = set()
    matches: list[tuple[int, int, float]] = []
    for j in order:
        g, p = int(gi[j]), int(pi[j])
        if g in used_g or p in used_p:
            continue
        used_g.add(g)
        used_p.add(p)
        matches.append((g, p, float(vals[j])))
    return matches


def _ratio(num: int, den: int, *, other_empty: bool) -> float:
    if den == 0:
        return 1.0 if other_empty else 0.0
    return num / den


def precision_recall(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
                     iou_threshold: float = 0.5, *, match_labels: bool = True) -> tuple[float, float]:
    """(GP, GR) of one image: matched predictions / predictions, matched gts / gts.

    Greedy matching at IoU >= ``iou_threshold`` (:func:`greedy_match`).  An empty side
    gives 1.0 when the other side is empty too, else 0.0.
    """
    return precision_recall_dataset([gts], [preds], iou_threshold, match_labels=match_labels)


def precision_recall_dataset(gts_per_image: Sequence[Sequence[Mapping[str, Any]]],
                             preds_per_image: Sequence[Sequence[Mapping[str, Any]]],
                             iou_threshold: float = 0.5, *, match_labels: bool = True) -> tuple[float, float]:
    """(GP, GR) of a split, pooled over images: total matches / total predictions (gts)."""
    if len(gts_per_image) != len(preds_per_image):
        raise ValueError(f"{len(gts_per_image)} ground-truth lists but {len(preds_per_image)} prediction lists")
    n_match = n_gt = n_pred = 0
    for gts, preds in zip(gts_per_image, preds_per_image, strict=True):
        n_match += len(greedy_match(gts, preds, iou_threshold, match_labels=match_labels))
        n_gt += len(gts)
        n_pred += len(preds)
    gp = _ratio(n_match, n_pred, other_empty=n_gt == 0)
    gr = _ratio(n_match, n_gt, other_empty=n_pred == 0)
    return gp, gr
