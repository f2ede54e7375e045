"""Several images per sample through the command line: ``check``, ``train`` (a few GRPO steps) and ``eval`` on
the two-image REC worked example (``tests/fixtures/rec-two-images``), with the tiny random Qwen2.5-VL.

What this reaches: the REC reader, the pre-flight checks, the trainer's prompts (two placeholders per prompt),
the hf engine, shared-prefix scoring in the update, the evaluation after training and ``syngrpo eval`` on
the checkpoint.  Not reached: the data server (the tiny random policy writes no description to synthesize
from; what synthesis does to a two-image sample is in tests/test_task_rec_multi_image.py) and vLLM (CUDA).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syngrpo.cli import main
from syngrpo.rundir.runlog import read_jsonl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rec-two-images" / "train.jsonl"
STEPS = 2


@pytest.fixture(scope="module")
def run_dir(tiny_policy_dir, tmp_path_factory, overrides_for):
    out = tmp_path_factory.mktemp("multi") / "run"
    sets = overrides_for(
        tiny_policy_dir,
        f"data.train={FIXTURE}",
        f"data.eval={FIXTURE}",
        f"optim.max_steps={STEPS}",
        "eval.at_end=true",
        "eval.max_new_tokens=8",
        "logging.samples_every=1",
        "algorithm.shared_prefix=true",
    )
    check = ["check"]
    for item in sets:
        check += ["--set", item]
    assert main(check) == 0  # the data and the family pass before anything loads
    argv = ["train", "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    import syngrpo.train.rollouts as rollouts

    real = rollouts.encode_prompts
    with pytest.MonkeyPatch.context() as mp:  # what the trainer's rollouts prompted with: images per prompt
        mp.setattr(rollouts, "encode_prompts", lambda *a, **k: _seen(real(*a, **k)))
        assert main(argv) == 0
    return out


SEEN: list[list[int]] = []


def _seen(batch):
    SEEN.append(batch.counts())
    return batch


def test_a_few_steps_train_on_two_image_prompts(run_dir):
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if r.get("step", 0) >= 1 and "loss" in r]
    assert len(steps) == STEPS
    assert SEEN and all(counts == [2] * len(counts) for counts in SEEN)  # both images of every sample prompted
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert samples and all(len(s["images"]) == 2 and s["box_image"] in (0, 1) for s in samples)
    assert all(s["problem"].endswith(("in the first image", "in the second image")) for s in samples)


def test_the_evaluation_after_training_and_the_eval_command_score_two_image_samples(run_dir, tmp_path):
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert "eval/acc@0.5" in records[-1]
    assert main(["eval", "--checkpoint", str(run_dir), "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads(next(tmp_path.glob("eval-*.json")).read_text())
    assert report["task"] == "rec" and report["metrics"]["n"] == 4
