"""S_bbox and S_rotation, the ISR refinement scores.

The paper (Syn-GRPO §4, Table 3) scores the perception stage of ISR like OVD
(mAP, GP, GR) and the refinement stage with S_bbox (object position) and
S_rotation (object rotation), whose exact formulas are in an appendix we do
not have.  syngrpo defines them as follows (docs/tasks/isr.md):

1. Per image, ground-truth and predicted objects are matched one to one,
   greedily by decreasing IoU, only between equal labels, at IoU >= 0.5
   (:func:`syngrpo.detection.greedy_match`, the matching behind GP/GR; labels
   compare after :func:`syngrpo.detection.normalize_label`).
2. ``S_bbox`` = mean IoU over every matched pair of the split.
3. ``S_rotation`` = mean over the matched pairs whose ground truth has a
   rotation of ``1 - e / 180``, with ``e`` the angular error in degrees
   compared modulo 360 (:func:`tasks_isr.rotation.angular_error`, so
   ``e`` is in ``[0, 180]``); a prediction without a rotation scores 0.
4. With no matched pair in the split both are 0, except for a split with
   neither labelled nor predicted objects, where both are 1 (nothing to find,
   nothing claimed: the convention of :mod:`syngrpo.detection`).

Both are conditional on detection (quality of the objects found), so read them
next to GR: a model that finds one object perfectly has S_bbox = 1 and a tiny GR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from syngrpo.detection import greedy_match, normalize_label
from tasks_isr.rotation import angular_error

Objects = Sequence[Mapping[str, Any]]


def rotation_score(predicted: float | None, target: float, *, symmetry: int = 1) -> float:
    """``1 - angular_error / 180`` in [0, 1]; a missing prediction scores 0."""
    if predicted is None:
        return 0.0
    return 1.0 - angular_error(predicted, target, symmetry=symmetry) / 180.0


def refinement_scores(
    gts_per_image: Sequence[Objects],
    preds_per_image: Sequence[Objects],
    *,
    iou_threshold: float = 0.5,
    symmetry: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """``{"s_bbox", "s_rotation", "n_pairs"}`` of a split (definitions in the module docstring).

    ``symmetry`` maps a label to the order of its top-view rotational symmetry
    (default 1 for every label: rotations compared modulo 360).
    """
    if len(gts_per_image) != len(preds_per_image):
        raise ValueError(f"{len(gts_per_image)} images of labels but {len(preds_per_image)} of predictions")
    orders = {normalize_label(k): int(v) for k, v in (symmetry or {}).items()}
    ious: list[float] = []
    rot: list[float] = []
    anything = False
    for gts, preds in zip(gts_per_image, preds_per_image, strict=True):
        anything = anything or bool(gts) or bool(preds)
        for gi, pi, value in greedy_match(gts, preds, iou_threshold, match_labels=True):
            ious.append(float(value))
            target = gts[gi].get("rotation")
            if target is None:
                continue  # a label without a rotation cannot score one
            order = orders.get(normalize_label(gts[gi]["label"]), 1)
            rot.append(rotation_score(preds[pi].get("rotation"), float(target), symmetry=order))
    empty = 0.0 if anything else 1.0
    return {
        "s_bbox": sum(ious) / len(ious) if ious else empty,
        "s_rotation": sum(rot) / len(rot) if rot else empty,
        "n_pairs": float(len(ious)),
    }
