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
    COCO_IOU_THRESHOLDS,
    COCO_MAX_DETS,
    _category_aps,
    _match,
    _read,
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
    tp, fp, regular = _match(g_boxes, g_cats, [(b, c) for b, c, _ in ordered], thresholds)  # (T, D total)
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
