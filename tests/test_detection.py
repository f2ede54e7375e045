"""COCO AP in numpy agrees with pycocotools; GP/GR, eq. 3 and the edge cases by hand.

pycocotools is the reference: every randomised case is scored by both, on the same
boxes, and must agree within 1e-6 (in practice to ~1e-16).  The default rule for
labels absent from the ground truth (a category with AP 0) is checked against
pycocotools run on ground truth with one unreachable box of each such label added.
"""

from __future__ import annotations

import contextlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syngrpo.perception.detection import (
    coco_ap,
    coco_ap_dataset,
    greedy_match,
    iou_matrix,
    normalize_label,
    ovd_reward,
    precision_recall,
    precision_recall_dataset,
    redundancy_scale,
)

pytest.importorskip("pycocotools")


def _pycocotools_map(gts_per_image, preds_per_image, *, unknown_as_zero=False):
    """COCO AP@[.5:.95] from pycocotools (stats[0]); -1 when COCO finds it undefined.

    With ``unknown_as_zero`` every predicted label absent from the ground truth gets one
    ground-truth box far from every prediction: COCO then scores that category AP 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts_per_image = [list(g) for g in gts_per_image]
    if unknown_as_zero:
        known = {normalize_label(g["label"]) for im in gts_per_image for g in im}
        absent = sorted({normalize_label(p["label"]) for im in preds_per_image for p in im} - known)
        for k, label in enumerate(absent):
            x = 1e6 + 10 * k
            gts_per_image[0].append({"bbox_2d": [x, x, x + 5, x + 5], "label": label})
    labels = sorted({normalize_label(d["label"]) for im in gts_per_image + list(preds_per_image) for d in im})
    cat = {name: i + 1 for i, name in enumerate(labels)}
    anns, dets = [], []
    for i, gts in enumerate(gts_per_image):
        for g in gts:
            x1, y1, x2, y2 = g["bbox_2d"]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat[normalize_label(g["label"])],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    for i, preds in enumerate(preds_per_image):
        for p in preds:
            x1, y1, x2, y2 = p["bbox_2d"]
            dets.append({"image_id": i + 1, "category_id": cat[normalize_label(p["label"])],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": p.get("score", 1.0)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": i + 1} for i in range(len(gts_per_image))], "annotations": anns,
                           "categories": [{"id": v, "name": k} for k, v in cat.items()]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _random_box(rng: random.Random, integer: bool, size=200):
    if integer:
        x, y = rng.randint(0, size - 40), rng.randint(0, size - 40)
        return [x, y, x + rng.randint(1, 40), y + rng.randint(1, 40)]
    x, y = rng.uniform(0, size - 40), rng.uniform(0, size - 40)
    return [x, y, x + rng.uniform(0.5, 40), y + rng.uniform(0.5, 40)]


def _jitter(rng: random.Random, box, integer: bool):
    d = [rng.randint(-5, 5) if integer else rng.uniform(-5, 5) for _ in range(4)]
    b = [v + e for v, e in zip(box, d, strict=True)]
    return [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]


def _random_image(rng: random.Random, labels="abcd", max_gt=8, max_pred=12):
    """Ground truth and predictions: near-duplicates of gts (some mislabelled), strays, score ties."""
    integer = rng.random() < 0.5
    gts = [{"bbox_2d": _random_box(rng, integer), "label": rng.choice(labels[:3])} for _ in range(rng.randint(0, max_gt))]
    score_mode = rng.choice(["ties", "random", "few"])
    preds = []
    for _ in range(rng.randint(0, max_pred)):
        if gts and rng.random() < 0.75:
            g = rng.choice(gts)
            box = _jitter(rng, g["bbox_2d"], integer)
            label = g["label"] if rng.random() < 0.85 else rng.choice(labels)
        else:
            box, label = _random_box(rng, integer), rng.choice(labels)
        det = {"bbox_2d": box, "label": label}
        if score_mode == "random":
            det["score"] = rng.random()
        elif score_mode == "few":
            det["score"] = rng.choice([0.3, 0.6, 0.9])
        preds.append(det)
    return gts, preds


def _cases(seed: int, n: int, n_images: tuple[int, int]):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        images = [_random_image(rng) for _ in range(rng.randint(*n_images))]
        gts = [g for g, _ in images]
        preds = [p for _, p in images]
        if any(gts) and any(preds):  # pycocotools cannot load empty results; edge cases are tested by hand
            out.append((gts, preds))
    return out


# ---- agreement with pycocotools ----------------------------------------------------------


@pytest.mark.parametrize("case", range(6))
def test_per_image_map_equals_pycocotools_when_unknown_labels_are_dropped(case):
    for gts, preds in _cases(seed=100 + case, n=40, n_images=(1, 1)):
        expected = _pycocotools_map(gts, preds)
        ours = coco_ap(gts[0], preds[0], drop_unknown_labels=True)
        if expected < 0:  # every predicted label absent from the gt: COCO is undefined, we say 0
            assert ours == 0.0
        else:
            assert ours == pytest.approx(expected, abs=1e-6), (gts, preds)


@pytest.mark.parametrize("case", range(6))
def test_per_image_map_with_unknown_labels_equals_pycocotools_with_unreachable_ground_truth(case):
    for gts, preds in _cases(seed=200 + case, n=40, n_images=(1, 1)):
        expected = _pycocotools_map(gts, preds, unknown_as_zero=True)
        assert coco_ap(gts[0], preds[0]) == pytest.approx(expected, abs=1e-6), (gts, preds)


@pytest.mark.parametrize("case", range(4))
def test_dataset_map_equals_pycocotools(case):
    for gts, preds in _cases(seed=300 + case, n=15, n_images=(2, 6)):
        assert coco_ap_dataset(gts, preds, drop_unknown_labels=True) == pytest.approx(
            max(_pycocotools_map(gts, preds), 0.0), abs=1e-6)
        assert coco_ap_dataset(gts, preds) == pytest.approx(
            _pycocotools_map(gts, preds, unknown_as_zero=True), abs=1e-6)


def test_tied_scores_are_ranked_in_the_order_given_as_pycocotools_does():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [50, 50, 60, 60], "label": "a"}]
    miss = {"bbox_2d": [100, 100, 110, 110], "label": "a"}
    hit = {"bbox_2d": [0, 0, 10, 10], "label": "a"}
    first_wrong, first_right = coco_ap(gt, [miss, hit]), coco_ap(gt, [hit, miss])
    assert first_wrong == pytest.approx(_pycocotools_map([gt], [[miss, hit]]), abs=1e-12)
    assert first_right == pytest.approx(_pycocotools_map([gt], [[hit, miss]]), abs=1e-12)
    assert first_wrong < first_right


def test_a_detection_equally_close_to_two_ground_truths_takes_the_later_one_as_pycocotools():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [2, 0, 12, 10], "label": "a"}]
    between = {"bbox_2d": [1, 0, 11, 10], "label": "a"}  # IoU 90/110 with both
    exact = {"bbox_2d": [2, 0, 12, 10], "label": "a"}  # the second gt; IoU 80/120 with the first
    # t <= 0.65: ``between`` takes gt 1 (the later of the tie), ``exact`` falls back on gt 0: AP 1.
    # t in 0.70..0.80: ``exact`` cannot reach gt 0 any more: recall 1/2 at precision 1 (51 of 101 points).
    # t >= 0.85: ``between`` matches nothing, ``exact`` takes gt 1: recall 1/2 at precision 1/2.
    ours = coco_ap(gts, [between, exact])
    assert ours == pytest.approx(_pycocotools_map([gts], [[between, exact]]), abs=1e-12)
    assert ours == pytest.approx((4 * 1.0 + 3 * 51 / 101 + 3 * 51 * 0.5 / 101) / 10)


def test_more_than_one_hundred_detections_keep_only_the_top_scored_as_pycocotools():
    rng = random.Random(7)
    gts = [{"bbox_2d": _random_box(rng, True, 1000), "label": "a"} for _ in range(30)]
    preds = [{"bbox_2d": _jitter(rng, g["bbox_2d"], True), "label": "a", "score": rng.random()}
             for g in gts for _ in range(5)]
    assert len(preds) == 150
    assert coco_ap(gts, preds) == pytest.approx(_pycocotools_map([gts], [preds]), abs=1e-6)


def test_boxes_beyond_cocos_area_range_are_ignored_as_pycocotools_does():
    huge = [0, 0, 2e5, 2e5]  # area 4e10 > 1e10
    gts = [{"bbox_2d": huge, "label": "a"}, {"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    preds = [{"bbox_2d": huge, "label": "a"}, {"bbox_2d": [0, 0, 10, 10], "label": "a"},
             {"bbox_2d": [1e5, 1e5, 3e5, 3e5], "label": "a"}]
    assert coco_ap(gts, preds) == pytest.approx(_pycocotools_map([gts], [preds]), abs=1e-9)
    assert coco_ap(gts, preds) == pytest.approx(1.0)


def test_per_category_and_segmented_ap_paths_agree():
    """Large splits take the one-category-at-a-time path; both must give the same APs."""
    import numpy as np

    from syngrpo.perception.detection import _category_aps

    rng = np.random.default_rng(0)
    for _ in range(20):
        n_d, n_cat = int(rng.integers(0, 60)), int(rng.integers(1, 5))
        scores = rng.choice([0.2, 0.5, 1.0], size=n_d)
        cats = rng.integers(0, n_cat + 1, size=n_d)  # n_cat: a label with no ground truth
        tp = rng.random((10, n_d)) < 0.5
        fp = ~tp & (rng.random((10, n_d)) < 0.8)
        n_gt = rng.integers(0, 6, size=n_cat)
        segmented = _category_aps(scores, cats, tp, fp, n_gt)
        one_by_one = _category_aps(scores, cats, tp, fp, n_gt, vector_limit=0)
        assert segmented == pytest.approx(one_by_one, abs=1e-12)


def test_iou_matrix_matches_the_hand_values():
    m = iou_matrix([[0, 0, 10, 10], [5, 0, 15, 10]], [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    assert m.shape == (2, 3)
    assert m[0].tolist() == pytest.approx([1.0, 0.0, 0.25])
    assert m[1].tolist() == pytest.approx([1 / 3, 0.0, 0.0])


# ---- AP and eq. 3 by hand ----------------------------------------------------------------


def test_ap_of_a_miss_ranked_before_a_hit_is_half_precision_up_to_half_recall():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [50, 50, 60, 60], "label": "a"}]
    preds = [{"bbox_2d": [100, 100, 110, 110], "label": "a"}, {"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    # recall reaches 0.5 at precision 1/2: recall points 0.00 .. 0.50 (51 of 101) read 0.5
    assert coco_ap(gt, preds) == pytest.approx(51 * 0.5 / 101)


def test_perfect_predictions_score_one():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [20, 20, 40, 30], "label": "b"}]
    # precision is tp / (tp + fp + eps) as in pycocotools, so "1" is 1 - 2e-16
    assert coco_ap(gt, gt) == pytest.approx(1.0, abs=1e-12)
    assert ovd_reward(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_a_hallucinated_label_is_a_category_with_ap_zero_unless_dropped():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [30, 30, 40, 40], "label": "dog"}]
    assert coco_ap(gt, preds) == pytest.approx(0.5)  # mean of AP(cat) = 1 and AP(dog) = 0
    assert coco_ap(gt, preds, drop_unknown_labels=True) == pytest.approx(1.0)
    # eq. 3: min(1, 1/2) * mAP; N_pred counts the dropped prediction too
    assert ovd_reward(gt, preds) == pytest.approx(0.25)
    assert ovd_reward(gt, preds, drop_unknown_labels=True) == pytest.approx(0.5)


def test_labels_compare_without_case_or_extra_spaces():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "Traffic  light"}]
    assert coco_ap(gt, [{"bbox_2d": [0, 0, 10, 10], "label": " traffic light"}]) == pytest.approx(1.0)


def test_redundancy_scale_is_min_of_one_and_the_count_ratio():
    assert redundancy_scale(3, 6) == 0.5
    assert redundancy_scale(6, 3) == 1.0
    assert redundancy_scale(4, 4) == 1.0
    assert redundancy_scale(0, 5) == 0.0
    assert redundancy_scale(5, 0) == 1.0  # nothing predicted: nothing redundant


def test_duplicate_predictions_lower_the_reward_through_the_redundancy_scale():
    gt = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}] * 4
    assert coco_ap(gt, preds) == pytest.approx(1.0)  # the first one is a hit at every threshold; the rest come after
    assert ovd_reward(gt, preds) == pytest.approx(0.25)


def test_edge_cases_of_empty_ground_truth_and_empty_predictions():
    box = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    assert coco_ap([], []) == 1.0
    assert ovd_reward([], []) == 1.0
    assert coco_ap(box, []) == 0.0
    assert ovd_reward(box, []) == 0.0
    assert coco_ap([], box) == 0.0
    assert coco_ap([], box, drop_unknown_labels=True) == 0.0
    assert ovd_reward([], box) == 0.0
    assert coco_ap_dataset([[], []], [[], []]) == 1.0


def test_malformed_detections_are_rejected_with_a_message():
    with pytest.raises(ValueError, match=r"predictions of image 0\[0\]"):
        coco_ap([], [{"bbox_2d": [0, 0, 1], "label": "a"}])
    with pytest.raises(ValueError, match="finite"):
        coco_ap([{"bbox_2d": [0, 0, float("inf"), 1], "label": "a"}], [])
    with pytest.raises(ValueError, match="ground-truth lists"):
        coco_ap_dataset([[]], [])


# ---- greedy matching, GP and GR by hand ------------------------------------------------------


def test_greedy_matching_takes_the_highest_iou_pair_first():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [4, 0, 14, 10], "label": "a"}]
    # p0 overlaps g0 (IoU 0.667) and g1 (IoU 0.818); p1 overlaps g0 exactly
    preds = [{"bbox_2d": [2, 0, 12, 10], "label": "a"}, {"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    matches = greedy_match(gts, preds)
    assert [(g, p) for g, p, _ in matches] == [(0, 1), (1, 0)]
    assert matches[0][2] == 1.0
    assert matches[1][2] == pytest.approx(80 / 120)


def test_greedy_matching_is_one_to_one():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [0, 0, 10, 9], "label": "a"}]
    assert greedy_match(gts, preds) == [(0, 0, 1.0)]


def test_greedy_matching_needs_the_same_label_unless_told_otherwise():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "b"}]
    assert greedy_match(gts, preds) == []
    assert greedy_match(gts, preds, match_labels=False) == [(0, 0, 1.0)]


def test_greedy_matching_accepts_an_iou_equal_to_the_threshold():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    preds = [{"bbox_2d": [0, 0, 10, 5], "label": "a"}]  # IoU exactly 0.5
    assert greedy_match(gts, preds, 0.5) == [(0, 0, 0.5)]
    assert greedy_match(gts, preds, 0.51) == []


def test_gp_and_gr_count_matched_predictions_and_matched_ground_truths():
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [20, 0, 30, 10], "label": "a"},
           {"bbox_2d": [40, 0, 50, 10], "label": "b"}, {"bbox_2d": [60, 0, 70, 10], "label": "b"}]
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "a"},       # hit
             {"bbox_2d": [1, 0, 11, 10], "label": "a"},       # duplicate of the same gt: miss
             {"bbox_2d": [40, 0, 50, 10], "label": "a"},      # right place, wrong label: miss
             {"bbox_2d": [60, 0, 70, 10], "label": "b"},      # hit
             {"bbox_2d": [90, 90, 99, 99], "label": "b"}]     # stray: miss
    gp, gr = precision_recall(gts, preds)
    assert gp == pytest.approx(2 / 5)
    assert gr == pytest.approx(2 / 4)


def test_gp_and_gr_pool_counts_over_a_split():
    g = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    gp, gr = precision_recall_dataset([g, g + g], [g, []])
    assert (gp, gr) == (1.0, pytest.approx(1 / 3))


def test_gp_and_gr_of_empty_sides():
    g = [{"bbox_2d": [0, 0, 10, 10], "label": "a"}]
    assert precision_recall([], []) == (1.0, 1.0)
    assert precision_recall(g, []) == (0.0, 0.0)
    assert precision_recall([], g) == (0.0, 0.0)


# ---- properties --------------------------------------------------------------------------

_finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
_det = st.fixed_dictionaries(
    {"bbox_2d": st.lists(_finite, min_size=4, max_size=4), "label": st.sampled_from(["a", "b", "C ", "d"])},
    optional={"score": st.floats(min_value=0, max_value=1)},
)


@settings(max_examples=150, deadline=None)
@given(gts=st.lists(_det, max_size=6), preds=st.lists(_det, max_size=8), drop=st.booleans())
def test_every_score_stays_in_zero_one_on_arbitrary_boxes(gts, preds, drop):
    assert 0.0 <= coco_ap(gts, preds, drop_unknown_labels=drop) <= 1.0
    assert 0.0 <= ovd_reward(gts, preds, drop_unknown_labels=drop) <= 1.0
    gp, gr = precision_recall(gts, preds)
    assert 0.0 <= gp <= 1.0 and 0.0 <= gr <= 1.0
    matches = greedy_match(gts, preds)
    assert len({g for g, _, _ in matches}) == len(matches) == len({p for _, p, _ in matches})
