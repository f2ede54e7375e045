"""``syngrpo eval --benchmark refcoco_val`` reproduces VLM-R1's protocol (its src/eval/test_rec_r1.py) exactly:
the 2,000-record subset its seed-42 shuffle picks, its answer reading, its rescaling and its IoU > 0.5 boundary.

VLM-R1's rules are restated here independently (the oracle), from its script, not from syngrpo's code.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from syngrpo.plugins import get_registry
from tests.data import fixtures
from tests.data.scripted import ScriptedAnswers

ROOT = Path(__file__).resolve().parents[2]
N = 2003  # more than the protocol's 2,000, so the shuffle decides which records count


def vlmr1_subset(data: list, n: int = 2000) -> list:
    """test_rec_r1.py: ``random.seed(42); random.shuffle(data); data = data[:num_samples]``."""
    data = list(data)
    random.seed(42)
    random.shuffle(data)
    return data[:n]


def vlmr1_extract(content: str) -> list[int]:
    """test_rec_r1.py's extract_bbox_answer: first <answer>, then {...[int, int, int, int]...}, else [0, 0, 0, 0]."""
    m = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
    if m:
        b = re.search(r"\{.*\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)]\s*.*\}", m.group(1).strip(), re.DOTALL)
        if b:
            return [int(b.group(i)) for i in range(1, 5)]
    return [0, 0, 0, 0]


def vlmr1_iou(box1, box2) -> float:
    """test_rec_r1.py's iou (inclusive pixels)."""
    ix1, iy1 = max(box1[0], box2[0]), max(box1[1], box2[1])
    ix2, iy2 = min(box1[2] - 1, box2[2] - 1), min(box1[3] - 1, box2[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    return float(inter) / ((box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - inter)


#: hand values: gt [0, 0, 28, h] and the answer [0, 0, 28, 14] overlap in 28 x 14 = 392 inclusive pixels; the union is
#: 28 h, so IoU = 14 / h: exactly 0.5 for h = 28, 0.5 + 1e-9 for h = 14 / (0.5 + 1e-9)
EXACT_HALF = 28.0
JUST_ABOVE = 14 / (0.5 + 1e-9)
ANSWER = '<think>box</think><answer>{"bbox_2d": [0, 0, 28, 14], "label": "x"}</answer>'


def write_split(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A rec_jsons_processed-style refcoco_val.json of N records (shared 56 x 56 images) and the scripted answers."""
    images = tmp_path / "coco" / "train2014"
    for k in range(3):
        fixtures.image(images / f"COCO_train2014_{k:012d}.jpg", box=[0, 0, 28, 28])
    records = [fixtures.vlmr1_rec_record(i, f"train2014/COCO_train2014_{i % 3:012d}.jpg", [0.0, 0.0, 28.0, 28.0],
                                         f"target-{i:05d}") for i in range(N)]
    chosen = vlmr1_subset(records)
    a, b, c, d = (r["id"] for r in chosen[:4])
    records[b]["solution"] = [0.0, 0.0, 28.0, JUST_ABOVE]
    records[d]["solution"] = [0.0, 0.0, 28.0, 28.0]
    path = tmp_path / "rec_jsons_processed" / "refcoco_val.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(records))
    answers = {f"target-{a:05d}": ANSWER,                                   # IoU exactly 0.5: not counted
               f"target-{b:05d}": ANSWER,                                   # IoU 0.5 + 1e-9: counted
               f"target-{c:05d}": "<answer>[0, 0, 28, 28]</answer>",        # a perfect box without braces: a miss
               f"target-{d:05d}": '<answer></answer><answer>{"bbox_2d": [0, 0, 28, 28]}</answer>'}  # first block only
    return path, tmp_path / "coco", answers


def test_refcoco_val_takes_vlmr1s_subset_and_its_iou_boundary(tmp_path, tiny_policy_dir, cli):
    split, coco, answers = write_split(tmp_path)
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": [str(ROOT / "tests" / "data" / "scripted.py")],
        "model": {"policy": str(tiny_policy_dir), "device": "cpu", "dtype": "float32"},
        "rollout": {"engine": "scripted_answers", "engine_options": {"answers": str(tmp_path / "answers.json")}},
        "synthesis": {"mode": "off"}}))
    code, out, err = cli("eval", "-c", config, "--checkpoint", tiny_policy_dir, "--benchmark", "refcoco_val",
                         "--split", split, "--image-root", coco, "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "refcoco_val.predictions.json").read_text())
    data = json.loads(split.read_text())
    subset = vlmr1_subset(data)
    assert [r["id"] for r in report["results"]] == [str(d["id"]) for d in subset]  # the same 2,000, in its order
    assert report["protocol"] == {"subset": 2000, "seed": 42, "subset_rule": "shuffled_head", "batch_size": 2,
                                  "max_new_tokens": 256, "decoding": "greedy"}
    # every record scored as VLM-R1's script scores it (identity frame here: x / 56 * 56)
    by_id = {r["id"]: r for r in report["results"]}
    for d in subset:
        text = next((v for k, v in answers.items() if k == d["normal_caption"]), "")
        box = [v / 56 * 56 for v in vlmr1_extract(text)]
        assert by_id[str(d["id"])]["iou"] == vlmr1_iou(box, d["solution"])
        assert by_id[str(d["id"])]["correct"] == int(vlmr1_iou(box, d["solution"]) > 0.5)
    first, second, third, fourth = (by_id[str(d["id"])] for d in subset[:4])
    assert first["iou"] == 0.5 and first["correct"] == 0
    assert second["iou"] == pytest.approx(0.5 + 1e-9, abs=1e-15) and second["correct"] == 1
    assert third["extracted_answer"] == [0, 0, 0, 0] and third["correct"] == 0
    assert fourth["correct"] == 0
    assert report["metrics"]["acc@0.5"] == 1 / 2000 and report["metrics"]["box_without_braces"] == 1 / 2000
    table = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "### Table 1 (Qwen2.5-VL-3B)" in table and "| Syn-GRPO | — | 92.15 |" not in table
    assert "| Syn-GRPO | 92.15 |" in table and "| **this checkpoint (policy)** | 0.05 |" in table


def test_the_protocol_decodes_greedily_two_prompts_at_a_time(tmp_path, tiny_policy_dir):
    from syngrpo.models.policy import load_policy
    from syngrpo.train.benchmark import get_benchmark, run_benchmark

    split, coco, answers = write_split(tmp_path)
    registry = get_registry()
    engine = ScriptedAnswers(answers=answers)
    run = run_benchmark(get_benchmark(registry, "refcoco_val"), load_policy(tiny_policy_dir), engine,
                        registry=registry, data_file=split, image_root=coco, limit=5, prompt_style="vlmr1")
    assert [c["n"] for c in engine.calls] == [2, 2, 1] and run.limited
    assert {(c["temperature"], c["num_generations"], c["max_new_tokens"]) for c in engine.calls} == {(0.0, 1, 256)}
    assert "Please provide the bounding box coordinate of the region this sentence describes: target-" in \
        engine.prompts[0] and engine.prompts[0].count("Output the final answer in JSON format.") == 1
