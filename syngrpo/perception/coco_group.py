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
from typing import Any, NamedTuple

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

__all__ = ["GroupArrays", "coco_ap_batch_arrays", "coco_ap_group", "coco_ap_group_arrays", "ovd_reward_batch",
           "ovd_reward_group"]


def coco_ap_group(gts: Sequence[Mapping[str, Any]], preds_per_completion: Sequence[Sequence[Mapping[str, Any]]],
                  *, drop_unknown_labels: bool = False, max_dets: int = COCO_MAX_DETS) -> list[float]:
    """COCO mAP@[.5:.95] of each completion against the one shared ground truth ``gts``.

    Equals ``[coco_ap(gts, p, ...) for p in preds_per_completion]``.  Raises ValueError (naming
    the completion) on malformed detections, as :func:`coco_ap` does.
    """
    return coco_ap_batch_arrays([_group_arrays(gts, preds_per_completion, drop_unknown_labels)], max_dets=max_dets)[0]


def _group_arrays(gts: Sequence[Mapping[str, Any]], preds_per_completion: Sequence[Sequence[Mapping[str, Any]]],
                  drop_unknown_labels: bool, what: str = "") -> GroupArrays:
    """The detection dicts of one group read into arrays; ValueError naming the completion if malformed."""
    g_boxes, g_labels, _ = _read(gts, f"ground truth{what}")
    cat_id = {label: i for i, label in enumerate(sorted(set(g_labels)))}
    g_cats = np.fromiter((cat_id[label] for label in g_labels), dtype=np.int64, count=len(g_labels))
    dets, n_unknown, any_pred = [], [], []
    for i, preds in enumerate(preds_per_completion):
        p_boxes, p_labels, p_scores = _read(preds, f"predictions of completion {i}{what}")
        p_cats = np.fromiter((cat_id.get(label, -1) for label in p_labels), dtype=np.int64, count=len(p_labels))
        dets.append((p_boxes, p_cats, p_scores))
        n_unknown.append(0 if drop_unknown_labels else len({label for label in p_labels if label not in cat_id}))
        any_pred.append(bool(p_labels))
    return GroupArrays(g_boxes, g_cats, len(cat_id), dets, n_unknown, any_pred)


class GroupArrays(NamedTuple):
    """One GRPO group as arrays, for :func:`coco_ap_batch_arrays`.

    ``g_boxes`` (n, 4) and ``g_cats`` (n,) in ``[0, n_cats)``: the shared ground truth; ``dets``: per
    completion (boxes (d, 4), categories (-1: absent from the ground truth, dropped), scores or None
    for 1.0); ``n_unknown[i]``: labels of completion i absent from the ground truth that count as
    categories of AP 0 (0 when they are dropped); ``any_pred[i]``: whether it predicted anything.
    """

    g_boxes: np.ndarray
    g_cats: np.ndarray
    n_cats: int
    dets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    n_unknown: Sequence[int] | None = None
    any_pred: Sequence[bool] | None = None


def coco_ap_group_arrays(g_boxes: np.ndarray, g_cats: np.ndarray, n_cats: int,
                         dets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], *,
                         n_unknown: Sequence[int] | None = None, any_pred: Sequence[bool] | None = None,
                         max_dets: int = COCO_MAX_DETS) -> list[float]:
    """:func:`coco_ap_group` on arrays (the fields of :class:`GroupArrays`)."""
    return coco_ap_batch_arrays([GroupArrays(g_boxes, g_cats, n_cats, dets, n_unknown, any_pred)],
                                max_dets=max_dets)[0]


def coco_ap_batch_arrays(groups: Sequence[GroupArrays], *, max_dets: int = COCO_MAX_DETS,
                         max_pass_detections: int = 4096) -> list[list[float]]:
    """:func:`coco_ap_group_arrays` of every group of a batch: the groups of a chunk in one AP pass.

    Per group the pass costs ~40 numpy calls whatever its size, so a batch of B groups scored group
    by group pays them B times; here they are paid once per chunk of groups holding at most
    ``max_pass_detections`` detections (the size up to which the segmented AP code works on all
    categories at once; a group larger than that is a chunk of its own).  Each completion is matched
    against its own group's ground truth (one padded row per completion) and keeps categories of its
    own, so nothing crosses groups; the values equal the group-by-group ones to float rounding.
    """
    out: list[list[float]] = []
    chunk: list[GroupArrays] = []
    size = 0
    for group in groups:
        n = sum(len(d[1]) for d in group.dets)
        if chunk and size + n > max_pass_detections:
            out.extend(_one_pass(chunk, max_dets))
            chunk, size = [], 0
        chunk.append(group)
        size += n
    if chunk:
        out.extend(_one_pass(chunk, max_dets))
    return out


def _one_pass(groups: Sequence[GroupArrays], max_dets: int) -> list[list[float]]:
    """The AP of every completion of ``groups`` from one :func:`_match` and one :func:`_category_aps`."""
    thresholds = COCO_IOU_THRESHOLDS
    n_t = len(thresholds)
    ordered, owner = [], []  # per completion: its detections in score order, its group
    for j, group in enumerate(groups):
        for p_boxes, p_cats, p_scores in group.dets:
            known = p_cats >= 0
            p_boxes, p_cats = p_boxes[known], p_cats[known]
            if p_scores is None:  # every box scored 1.0 (VLM-R1): the stable order is the given one
                scores, order = np.ones(len(p_cats)), np.arange(len(p_cats))
            else:
                scores = p_scores[known]
                order = np.argsort(-scores, kind="mergesort")  # stable: ties keep the given order
            order = top_per_category(order, p_cats, max_dets)
            ordered.append((p_boxes[order], p_cats[order], scores[order]))
            owner.append(j)
    n_comp = len(ordered)
    if n_comp == 0:
        return [[] for _ in groups]
    n_gt = max(len(g.g_cats) for g in groups)
    gt_boxes = np.zeros((len(groups), n_gt, 4))
    gt_cats = np.full((len(groups), n_gt), -2, dtype=np.int64)  # padding: no detection has category -2
    for j, g in enumerate(groups):
        gt_boxes[j, : len(g.g_cats)] = g.g_boxes
        gt_cats[j, : len(g.g_cats)] = g.g_cats
    own = np.asarray(owner, dtype=np.int64)
    tp, fp, regular = _match(gt_boxes[own], gt_cats[own], [(b, c) for b, c, _ in ordered], thresholds)
    # categories with regular ground truth, per group; every completion has its group's categories
    first = {j: i for i, j in reversed(list(enumerate(owner)))}  # a completion of each group
    n_regular = {j: np.bincount(g.g_cats[regular[first[j], : len(g.g_cats)]], minlength=g.n_cats)[: g.n_cats]
                 for j, g in enumerate(groups) if j in first}
    n_cats = np.array([groups[j].n_cats for j in owner], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(n_cats)[:-1]])
    keys = np.concatenate([c + base[i] for i, (_, c, _) in enumerate(ordered)])
    scores = np.concatenate([s for _, _, s in ordered])
    n_gt_keys = np.concatenate([n_regular[j] for j in owner])
    aps = _category_aps(scores, keys, tp.reshape(n_t, -1), fp.reshape(n_t, -1), n_gt_keys)
    key_owner = np.repeat(np.arange(n_comp), n_cats)[n_gt_keys > 0]  # aps come in key order
    sums = np.bincount(key_owner, weights=aps, minlength=n_comp)
    n_valid = np.bincount(key_owner, minlength=n_comp)
    out: list[list[float]] = [[] for _ in groups]
    for i, j in enumerate(owner):
        group = groups[j]
        k = len(out[j])
        n_unknown = int(group.n_unknown[k]) if group.n_unknown is not None else 0
        any_pred = bool(group.any_pred[k]) if group.any_pred is not None else len(group.dets[k][1]) > 0
        count = int(n_valid[i]) + n_unknown
        if count == 0:
            out[j].append(1.0 if not (group.n_cats or any_pred) else 0.0)
        else:
            out[j].append(float(sums[i] / count))
    return out


def ovd_reward_group(gts: Sequence[Mapping[str, Any]], preds_per_completion: Sequence[Sequence[Mapping[str, Any]]],
                     *, drop_unknown_labels: bool = False) -> list[float]:
    """:func:`syngrpo.perception.detection.ovd_reward` of each completion, the AP of the group in one call."""
    return ovd_reward_batch([(gts, preds_per_completion)], drop_unknown_labels=drop_unknown_labels)[0]


def ovd_reward_batch(groups: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[Sequence[Mapping[str, Any]]]]],
                     *, drop_unknown_labels: bool = False) -> list[list[float]]:
    """:func:`ovd_reward_group` of every (ground truth, completions) group of a batch, in one AP pass.

    Raises ValueError naming the group and completion on malformed detections.
    """
    out = [[0.0] * len(preds) for _, preds in groups]
    todo, arrays = [], []
    for j, (gts, preds) in enumerate(groups):
        if not len(gts):
            out[j] = [1.0 if not len(p) else 0.0 for p in preds]
            continue
        idx = [i for i, p in enumerate(preds) if len(p)]
        todo.append((j, idx))
        arrays.append(_group_arrays(gts, [preds[i] for i in idx], drop_unknown_labels, f" (group {j})"))
    for (j, idx), aps in zip(todo, coco_ap_batch_arrays(arrays), strict=True):
        n_gt = len(groups[j][0])
        for i, ap in zip(idx, aps, strict=True):
            out[j][i] = redundancy_scale(n_gt, len(groups[j][1][i])) * ap
    return out
