"""Issue 5 item 2: the OVD reward is not the bottleneck.

One training batch of the paper's size: 20 samples x G = 6 completions, 10
ground-truth boxes per sample.  Each completion is scored with eq. 3 of
Syn-GRPO, ``min(1, N_gt / N_pred) * mAP``, twice: by :func:`syngrpo.perception.detection.ovd_reward`
(COCO AP written in numpy) and the way VLM-R1 does it, one pycocotools
``COCOeval`` per completion (every box scored 1.0, predicted labels absent from
the ground truth dropped, the redundancy factor counting every prediction).
The values must agree within 1e-6; the figure is how many times faster ours is
(target >= 20x).
"""

from __future__ import annotations

import random

import pytest
from coco_reference import pycocotools_ap

from syngrpo.perception.detection import normalize_label, ovd_reward

from .support import interleaved, median

pytestmark = pytest.mark.benchmark

LABELS = ["circle", "square", "triangle", "star", "hexagon"]
N_SAMPLES, GROUP, N_GT = 20, 6, 10


def _box(rng: random.Random, size: int = 448) -> list[float]:
    x, y = rng.uniform(0, size - 60), rng.uniform(0, size - 60)
    return [round(x, 1), round(y, 1), round(x + rng.uniform(8, 60), 1), round(y + rng.uniform(8, 60), 1)]


def _completion(rng: random.Random, gts: list[dict]) -> list[dict]:
    """What a policy writes: jittered copies of some gts (some relabelled), duplicates, strays, a hallucination."""
    preds = []
    for g in gts:
        if rng.random() < 0.7:
            j = [v + rng.uniform(-6, 6) for v in g["bbox_2d"]]
            box = [min(j[0], j[2]), min(j[1], j[3]), max(j[0], j[2]), max(j[1], j[3])]
            label = g["label"] if rng.random() < 0.85 else rng.choice(LABELS)
            preds.append({"bbox_2d": box, "label": label})
            if rng.random() < 0.15:  # a redundant second box on the same object
                preds.append({"bbox_2d": [v + rng.uniform(-3, 3) for v in box], "label": label})
    for _ in range(rng.randint(0, 3)):
        preds.append({"bbox_2d": _box(rng), "label": rng.choice(LABELS)})
    if rng.random() < 0.2:
        preds.append({"bbox_2d": _box(rng), "label": "unicorn"})  # not in any ground truth: dropped
    if not preds:
        preds.append({"bbox_2d": _box(rng), "label": gts[0]["label"]})
    return preds


def make_batch(seed: int = 0) -> list[tuple[list[dict], list[list[dict]]]]:
    """(ground truth, G completions) for each of the 20 samples."""
    rng = random.Random(seed)
    batch = []
    for _ in range(N_SAMPLES):
        gts = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS[:4])} for _ in range(N_GT)]
        batch.append((gts, [_completion(rng, gts) for _ in range(GROUP)]))
    return batch


def pycocotools_ovd_reward(gts: list[dict], preds: list[dict]) -> float:
    """Eq. 3 the VLM-R1 way: a fresh COCO ground truth and COCOeval for one completion."""

    cats = {name: i + 1 for i, name in enumerate(sorted({normalize_label(g["label"]) for g in gts}))}
    anns = []
    for g in gts:
        x1, y1, x2, y2 = g["bbox_2d"]
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": cats[normalize_label(g["label"])],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    dets = []
    for p in preds:
        label = normalize_label(p["label"])
        if label not in cats:
            continue  # VLM-R1 drops predicted classes absent from the ground truth
        x1, y1, x2, y2 = p["bbox_2d"]
        dets.append({"image_id": 1, "category_id": cats[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0})
    if not dets:
        return 0.0
    ap = max(0.0, pycocotools_ap(anns, dets, cats, image_id=1))
    return min(1.0, len(gts) / len(preds)) * ap


def score_ours(batch) -> list[float]:
    return [ovd_reward(gts, p, drop_unknown_labels=True) for gts, group in batch for p in group]


def score_pycocotools(batch) -> list[float]:
    return [pycocotools_ovd_reward(gts, p) for gts, group in batch for p in group]


def test_ovd_reward_matches_pycocotools_and_is_faster(benchmark, figures, quick):
    pytest.importorskip("pycocotools")
    batch = make_batch()
    ours, reference = score_ours(batch), score_pycocotools(batch)
    assert len(ours) == N_SAMPLES * GROUP == 120
    assert max(abs(a - b) for a, b in zip(ours, reference, strict=True)) <= 1e-6
    # the batch is not degenerate: rewards spread over (0, 1)
    assert 0.0 < min(ours) and max(ours) < 1.0 and len({round(v, 6) for v in ours}) > 60

    rounds = 2 if quick else 15
    times = interleaved({"ours": lambda: score_ours(batch), "pycocotools": lambda: score_pycocotools(batch)},
                        rounds=rounds, warmup=0 if quick else 1)
    t_ours, t_ref = median(times["ours"]), median(times["pycocotools"])
    ratio = t_ref / t_ours
    figures("OVD reward: pycocotools time / ours (120 completions)", ratio, target=">= 20x", met=ratio >= 20,
            ours_ms_per_batch=1e3 * t_ours, pycocotools_ms_per_batch=1e3 * t_ref, rounds=rounds)
    benchmark.pedantic(score_ours, args=(batch,), rounds=1 if quick else 10, iterations=1)
