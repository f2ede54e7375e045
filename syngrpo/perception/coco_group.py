"""COCO AP of a whole GRPO group in one call: G completions that share one ground truth.

GRPO scores G completions of the same prompt, so they share the ground truth.  Scoring them one
by one with :func:`syngrpo.perception.detection.coco_ap` reads and sorts the ground truth G times and runs
the per-category AP (cumulative sums, envelope, recall lookup) G times on a handful of columns,
where numpy's per-call overhead dominates.  Here the ground truth is read once, and the AP of
every (completion, category) pair comes out of one pass of the segmented AP code, each
completion's detections being given categories of their own (``completion * n_categories +
category``): categories never compete, so the pairs do not see one another.

The results equal ``[coco_ap(gts, p, ...) for p in preds_per_completion]`` (to float rounding,
~1e-15: the segmented envelope adds and removes offsets); ``tests/test_coco_group.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from syngrpo.perception.detection import (
    _AREA_RANGE,
    COCO_IOU_THRESHOLDS,
    COCO_MAX_DETS,
    _category_aps,
    _read,
    iou_matrix,
    redundancy_scale,
    top_per_category,
)

__all__ = ["coco_ap_group", "coco_ap_group_arrays", "ovd_reward_group"]


def coco_ap_group(gts: Sequence[Mapping[str, Any]], preds_per_completion: Sequence[Sequence[Mapping[str, Any]]],
                  *, drop_unknown_labels: bool = False, max_dets: int = COCO_MAX_DETS) -> list[float]:
    """COCO mAP@[.5:.95] of each completion against the one shared ground truth ``gts``.

    Equals ``[coco_ap(gts, p, ...) for p in preds_per_completion]``.  Raises ValueError (naming
    the completion) on malformed detections, as :func:`coco_ap` does.
    """
    g_boxes, g_labels, _ = _read(gts, "ground truth")
    cat_id = {label: i for i, label in enumerate(sorted(set(g_labels)))}
    g_cats = np.fromiter((cat_id[label] for label in g_labels), dtype=np.int64, count=len(g_labels))
    dets, n_unknown, any_pred = [], [], []
    for i, preds in enumerate(preds_per_completion):
        p_boxes, p_labels, p_scores = _read(preds, f"predictions of completion {i}")
        p_cats = np.fromiter((cat_id.get(label, -1) for label in p_labels), dtype=np.int64, count=len(p_labels))
        dets.append((p_boxes, p_cats, p_scores))
        n_unknown.append(0 if drop_unknown_labels else len({label for label in p_labels if label not in cat_id}))
        any_pred.append(bool(p_labels))
    return coco_ap_group_arrays(g_boxes, g_cats, len(cat_id), dets, n_unknown=n_unknown, any_pred=any_pred,
                                max_dets=max_dets)


def coco_ap_group_arrays(g_boxes: np.ndarray, g_cats: np.ndarray, n_cats: int,
                         dets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], *,
                         n_unknown: Sequence[int] | None = None, any_pred: Sequence[bool] | None = None,
                         max_dets: int = COCO_MAX_DETS) -> list[float]:
    """:func:`coco_ap_group` on arrays: ground-truth boxes (n, 4) and categories in ``[0, n_cats)``;
    per completion (boxes (d, 4), categories (-1: absent from the ground truth, dropped), scores or
    None for 1.0).  ``n_unknown[i]``: labels of completion i absent from the ground truth that count
    as categories of AP 0 (0 when they are dropped); ``any_pred[i]``: whether it predicted anything.
    """
    n_comp = len(dets)
    if n_comp == 0:
        return []
    n_unknown = [0] * n_comp if n_unknown is None else list(n_unknown)
    any_pred = [len(d[1]) > 0 for d in dets] if any_pred is None else list(any_pred)
    thresholds = COCO_IOU_THRESHOLDS
    n_t = len(thresholds)
    ordered = []
    for p_boxes, p_cats, p_scores in dets:
        known = p_cats >= 0
        p_boxes, p_cats = p_boxes[known], p_cats[known]
        if p_scores is None:  # every box scored 1.0 (VLM-R1): the stable order is the given one
            scores, order = np.ones(len(p_cats)), np.arange(len(p_cats))
        else:
            scores = p_scores[known]
            order = np.argsort(-scores, kind="mergesort")  # stable: ties keep the given order
        order = top_per_category(order, p_cats, max_dets)
        ordered.append((p_boxes[order], p_cats[order], scores[order]))
    tp, fp, regular = _match_group(g_boxes, g_cats, ordered, thresholds)  # (T, D total)
    n_regular = np.bincount(g_cats[regular], minlength=n_cats)[:n_cats]
    keys = np.concatenate([c + i * n_cats for i, (_, c, _) in enumerate(ordered)])
    scores = np.concatenate([s for _, _, s in ordered])
    aps = _category_aps(scores, keys, tp.reshape(n_t, -1), fp.reshape(n_t, -1), np.tile(n_regular, n_comp))
    n_valid = int((n_regular > 0).sum())
    sums = aps.reshape(n_comp, n_valid).sum(axis=1) if n_valid else np.zeros(n_comp)
    out = []
    for i in range(n_comp):
        count = n_valid + int(n_unknown[i])
        if count == 0:
            out.append(1.0 if not (n_cats or any_pred[i]) else 0.0)
        else:
            out.append(float(sums[i] / count))
    return out


def _match_group(g_boxes: np.ndarray, g_cats: np.ndarray, dets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg of every completion at once: :func:`syngrpo.perception.detection._match_image` with a
    leading completion axis, the greedy pass stepping through the k-th detection of every completion together.

    Returns ``tp``, ``fp`` (T, total detections, completion-major) and the per-ground-truth "not ignored" flags.
    """
    lo, hi = _AREA_RANGE
    g_area = (g_boxes[:, 2] - g_boxes[:, 0]) * (g_boxes[:, 3] - g_boxes[:, 1])
    g_ignored = (g_area < lo) | (g_area > hi)
    order = np.argsort(g_ignored, kind="mergesort")  # ignored ground truths last, as pycocotools
    g_sorted, gc_sorted, ig_sorted = g_boxes[order], g_cats[order], g_ignored[order]
    n_t, n_c, n_g = len(thresholds), len(dets), len(g_boxes)
    lengths = [len(c) for _, c, _ in dets]
    d_max = max(lengths, default=0)
    valid = np.zeros((n_c, d_max), dtype=bool)
    boxes = np.zeros((n_c, d_max, 4))
    cats = np.full((n_c, d_max), -1, dtype=np.int64)
    for i, (b, c, _) in enumerate(dets):
        valid[i, : len(c)] = True
        boxes[i, : len(c)] = b
        cats[i, : len(c)] = c
    matched = np.zeros((n_c, n_t, d_max), dtype=bool)
    d_ignored = np.zeros((n_c, n_t, d_max), dtype=bool)
    if d_max and n_g:
        ious = iou_matrix(boxes.reshape(-1, 4), g_sorted).reshape(n_c, d_max, n_g)
        ious[(cats[:, :, None] != gc_sorted[None, None, :]) | ~valid[:, :, None]] = -1.0
        limit = np.minimum(thresholds, 1 - 1e-10)[None, None, :, None]  # (1, 1, T, 1)
        passes = ious[:, :, None, :] >= limit  # (C, D, T, G): every threshold test, once
        taken = np.zeros((n_c, n_t, n_g), dtype=bool)
        any_ignored = bool(ig_sorted.any())
        g_index = np.arange(n_g)
        for k in np.nonzero(passes.any(axis=(0, 2, 3)))[0]:  # detections that can match something
            iou_k = ious[:, k, None, :]  # (C, 1, G)
            ok = passes[:, k] & ~taken  # (C, T, G)
            if any_ignored:  # a regular ground truth always wins over an ignored one
                found, pick = _last_best_group(ok & ~ig_sorted, iou_k)
                found_ig, pick_ig = _last_best_group(ok & ig_sorted, iou_k)
                pick = np.where(found, pick, pick_ig)
                found = found | found_ig
                d_ignored[:, :, k] = found & ig_sorted[pick]
            else:
                found, pick = _last_best_group(ok, iou_k)
            taken |= (g_index == pick[:, :, None]) & found[:, :, None]
            matched[:, :, k] = found
    d_area = (boxes[:, :, 2] - boxes[:, :, 0]) * (boxes[:, :, 3] - boxes[:, :, 1])
    d_ignored |= ~matched & ((d_area < lo) | (d_area > hi))[:, None, :]
    keep = valid[:, None, :].repeat(n_t, axis=1)  # (C, T, D)
    tp = (matched & ~d_ignored).transpose(1, 0, 2)[keep.transpose(1, 0, 2)].reshape(n_t, -1)
    fp = (~matched & ~d_ignored).transpose(1, 0, 2)[keep.transpose(1, 0, 2)].reshape(n_t, -1)
    return tp, fp, ~ig_sorted[np.argsort(order, kind="mergesort")]


def _last_best_group(ok: np.ndarray, iou_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (completion, threshold) row of ``ok`` (C, T, G): whether any gt qualifies, and the last one of highest IoU."""
    vals = np.where(ok, iou_k, -1.0)
    last = ok.shape[2] - 1 - np.argmax(vals[:, :, ::-1], axis=2)
    return ok.any(axis=2), last


def ovd_reward_group(gts: Sequence[Mapping[str, Any]], preds_per_completion: Sequence[Sequence[Mapping[str, Any]]],
                     *, drop_unknown_labels: bool = False) -> list[float]:
    """:func:`syngrpo.perception.detection.ovd_reward` of each completion, the AP of the group in one call."""
    n_gt = len(gts)
    out = [0.0] * len(preds_per_completion)
    todo = [i for i, p in enumerate(preds_per_completion) if n_gt and len(p)]
    if n_gt == 0:
        return [1.0 if not len(p) else 0.0 for p in preds_per_completion]
    aps = coco_ap_group(gts, [preds_per_completion[i] for i in todo], drop_unknown_labels=drop_unknown_labels)
    for i, ap in zip(todo, aps, strict=True):
        out[i] = redundancy_scale(n_gt, len(preds_per_completion[i])) * ap
    return out
