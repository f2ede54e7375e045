"""ISR scores: the perception stage's matched-pair quality, and the refinement stage's S_bbox / S_rotation.

The paper (Syn-GRPO §4) scores the perception stage of ISR like OVD (mAP, GP, GR) and the
refinement stage with S_bbox (object position) and S_rotation (object rotation), whose exact
formulas are in an appendix we do not have.  Two families live here (docs/tasks/isr.md):

**Perception side** (:func:`matched_pair_scores`, the ``isr`` task's ``matched_iou`` and
``matched_rotation``): the quality of the objects a detector found.

1. Per image, ground-truth and predicted objects are matched one to one, greedily by
   decreasing IoU, only between equal labels, at IoU >= 0.5
   (:func:`syngrpo.perception.detection.greedy_match`, the matching behind GP/GR; labels compare after
   :func:`syngrpo.perception.detection.normalize_label`).
2. ``matched_iou`` = mean IoU over every matched pair of the split.
3. ``matched_rotation`` = mean over the matched pairs whose ground truth has a rotation of
   :func:`rotation_score`; a prediction without a rotation scores 0.
4. With no matched pair in the split both are 0, except for a split with neither labelled nor
   predicted objects, where both are 1 (the convention of :mod:`syngrpo.perception.detection`).

Both are conditional on detection: read them next to GR.  They used to be called S_bbox and
S_rotation, but those name the *refinement* stage's scores, which these are not.

**Refinement side** (:func:`refinement_terms`, the ``isr_refine`` task's ``s_bbox`` and
``s_rotation``): the model gets a layout and returns it refined; objects keep their identity
(an ``id``), so no matching is needed.  Over the reference objects R of a split,

* ``S_bbox`` = (1/|R|) Σ IoU(answer box of r, reference box of r), a missing object 0;
* ``S_rotation`` = (1/|R_rot|) Σ rotation_score(answer rotation of r, reference rotation of r)
  over the objects R_rot whose reference has a rotation, a missing object or rotation 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from syngrpo.perception.detection import greedy_match, normalize_label
from syngrpo.perception.geometry import iou
from tasks_isr.rotation import angular_error

Objects = Sequence[Mapping[str, Any]]


def rotation_score(predicted: float | None, target: float, *, symmetry: int = 1) -> float:
    """``1 - angular_error / 180`` in [0, 1] (the error compared modulo ``360 / symmetry``); a missing
    prediction scores 0."""
    if predicted is None:
        return 0.0
    return 1.0 - angular_error(predicted, target, symmetry=symmetry) / 180.0


def matched_pair_scores(
    gts_per_image: Sequence[Objects],
    preds_per_image: Sequence[Objects],
    *,
    iou_threshold: float = 0.5,
    symmetry: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """``{"matched_iou", "matched_rotation", "n_pairs"}`` of a split (perception side, module docstring).

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
        "matched_iou": sum(ious) / len(ious) if ious else empty,
        "matched_rotation": sum(rot) / len(rot) if rot else empty,
        "n_pairs": float(len(ious)),
    }


def refinement_terms(reference: Objects, answer: Mapping[Any, Mapping[str, Any]], *,
                     symmetry: Mapping[str, int] | None = None) -> tuple[float, int, float, int]:
    """``(sum of IoUs, |R|, sum of rotation scores, |R_rot|)`` of one image (refinement side).

    ``reference`` objects carry ``id``, ``label``, ``bbox_2d`` and optionally ``rotation``;
    ``answer`` maps an id to the refined object (``bbox_2d`` and ``rotation``, both optional).
    Sums rather than means, so a split pools its objects (every object weighs the same).
    """
    orders = {normalize_label(k): int(v) for k, v in (symmetry or {}).items()}
    box_sum = rot_sum = 0.0
    n_rot = 0
    for ref in reference:
        got = answer.get(ref["id"], {})
        box = got.get("bbox_2d")
        box_sum += iou(ref["bbox_2d"], box) if box is not None else 0.0
        target = ref.get("rotation")
        if target is None:
            continue
        n_rot += 1
        order = orders.get(normalize_label(ref["label"]), 1)
        rot_sum += rotation_score(got.get("rotation"), float(target), symmetry=order)
    return box_sum, len(reference), rot_sum, n_rot
