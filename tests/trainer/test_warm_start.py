"""The trainer's warm start with the study's recipe (vision pre-training, an SFT split of its own) and the run summary."""

from __future__ import annotations

import json

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.rundir.summary import RunSummary, quarter_means, summarize_run, write_run_summary
from syngrpo.train.trainer import Trainer

GRID = "data.toy.options={grid: 2, position_code: true, n_shapes: [1, 2], relational_prob: 0.0}"
SYN = "rollout.response_format=syn"  # plain_steps only run before a syn-format SFT


def test_warm_start_pretrains_the_vision_tower_on_its_own_split_then_sfts_on_its_own_split(
        tiny_policy_dir, tmp_path, config_for, registry):
    from safetensors.torch import load_file

    cfg = config_for(tiny_policy_dir, GRID, SYN, "sft.enabled=true", "sft.steps=2", "sft.plain_steps=1",
                     "sft.batch_size=2", "sft.n_images=6", "sft.styles=[plain, textured]",
                     "sft.vision_pretrain.steps=3", "sft.vision_pretrain.n_images=8",
                     "sft.vision_pretrain.batch_size=4", "sft.vision_pretrain.object_labels=true",
                     "sft.answer_weight=10")
    with Trainer(cfg, tmp_path, registry=registry) as trainer:
        trainer.setup()
    stats = json.loads((tmp_path / "sft" / "sft_stats.json").read_text())
    assert stats["vision_pretrain"]["steps"] == 3 and stats["plain"]["steps"] == 1 and stats["steps"] == 2
    assert len(list((tmp_path / "data" / "pretrain" / "images").iterdir())) == 8
    for style in ("plain", "textured"):  # the SFT split shared between two background styles
        assert len(list((tmp_path / "data" / f"sft-{style}" / "images").iterdir())) == 3
    before = load_file(str(tiny_policy_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "sft" / "model.safetensors"))
    visual = [k for k in before if ".visual." in k or k.startswith("visual.") or "model.visual" in k]
    assert visual and any(not torch.equal(before[k], after[k]) for k in visual)


def test_the_warm_starts_own_toy_splits_with_a_dataset_file_are_a_config_error(tiny_policy_dir, config_for, tmp_path):
    from syngrpo.config import check_runnable

    data = f"data.train={tmp_path / 'train.jsonl'}"
    with pytest.raises(ConfigError, match="sft.vision_pretrain"):
        check_runnable(config_for(tiny_policy_dir, "sft.enabled=true", "sft.vision_pretrain.steps=5", data))
    with pytest.raises(ConfigError, match="sft.n_images"):
        check_runnable(config_for(tiny_policy_dir, "sft.enabled=true", "sft.n_images=5", data))
    # without SFT there is no warm start to draw them for: the quickstart with --set sft.enabled=false runs
    check_runnable(config_for(tiny_policy_dir, "sft.enabled=false", "sft.n_images=5", "sft.vision_pretrain.steps=5",
                              data))


# ---- the end-of-run summary ------------------------------------------------------------------------------


def _run_dir(tmp_path, rewards, before, after):
    (tmp_path / "eval").mkdir(parents=True)
    for step, acc in ((0, before), (len(rewards), after)):
        (tmp_path / "eval" / f"step-{step:06d}.json").write_text(json.dumps(
            {"step": step, "metrics": {"acc@0.5": acc, "mean_iou": acc, "format": 1.0, "n": 4}}))
    lines = [{"step": i + 1, "reward/total": r, "synthesis/submitted_total": 2 * (i + 1),
              "synthesis/done_total": i, "synthesis/failed_total": 1, "synthesis/in_flight": 3,
              "pool/synthesized_fraction": 0.5} for i, r in enumerate(rewards)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return tmp_path


def _scenes(tmp_path, registry):
    task = registry.create("tasks", "rec")
    opts = dict(grid=2, position_code=True, n_shapes=(2, 2), relational_prob=0.0)
    train = task.make_toy_dataset(tmp_path / "d" / "train", n=4, seed=0, split="train", image_size=56, **opts)
    evals = task.make_toy_dataset(tmp_path / "d" / "eval", n=4, seed=0, split="eval", image_size=56, **opts)
    return train, dict(chance=task.chance_baselines(evals, train), chance_labels=task.chance_baseline_labels)


def test_summary_reports_eval_against_chance_reward_trend_and_synthesis(tmp_path, registry):
    train, chance = _scenes(tmp_path, registry)
    run = _run_dir(tmp_path / "run", [0.2, 0.3, 0.5, 0.4, 0.6, 0.7, 0.8, 0.9], before=0.75, after=1.0)
    summary = summarize_run(run, seconds=100.0, train_samples=train, **chance)
    assert summary.chance["random_object"] == 0.5
    assert set(summary.chance) == {"random_object", "constant_box", "random_train_box"}
    assert summary.rewards["reward/total"] == pytest.approx((0.25, 0.85))
    assert summary.synthesis == {"submitted": 16, "done": 7, "failed": 1, "in_flight": 3, "pool": 4, "in_pool": 2}
    text = write_run_summary(summary).read_text()
    assert "| chance: a random object of the image | 50.0 |" in text
    assert "| before RL (after the warm start), step 0 | 75.0 |" in text and "| after RL, step 8 | 100.0 |" in text
    assert "16 jobs submitted, 7 done, 1 failed, 3 in flight" in text and "2 of 4 training samples" in text
    assert str(run / "gallery.html") in text
    verdict = text.strip().splitlines()[-1]
    assert verdict == summary.verdict
    assert "above the best chance row (50 %" in verdict and "RL added +25 points" in verdict
    assert "0.25 -> 0.85" in verdict and "(up)" in verdict


def test_summary_says_when_the_warm_start_is_not_above_chance_and_the_reward_fell(tmp_path, registry):
    train, chance = _scenes(tmp_path, registry)
    run = _run_dir(tmp_path / "run", [0.9, 0.8, 0.2, 0.1], before=0.25, after=0.0)
    verdict = summarize_run(run, seconds=1.0, train_samples=train, **chance).verdict
    assert "not above the best chance row" in verdict and "-25 points" in verdict and "(down)" in verdict


def test_with_one_object_per_image_the_random_object_row_is_left_out(tmp_path, registry):
    task = registry.create("tasks", "rec")
    opts = dict(grid=3, position_code=True, n_shapes=(1, 1), relational_prob=0.0)
    train = task.make_toy_dataset(tmp_path / "train", n=18, seed=0, split="train", image_size=84, **opts)
    evals = task.make_toy_dataset(tmp_path / "eval", n=18, seed=0, split="eval", image_size=84, **opts)
    rows = task.chance_baselines(evals, train)
    assert set(rows) == {"constant_box", "random_train_box"}
    assert 0.0 < rows["random_train_box"] < 0.5  # nine cells: about one in nine


def test_quarter_means_skip_step_zero_and_need_two_steps():
    assert quarter_means([{"step": 0, "x": 9.0}, {"step": 1, "x": 1.0}], "x") is None
    assert quarter_means([{"step": i, "x": float(i)} for i in range(0, 9)], "x") == (1.5, 7.5)
    assert RunSummary(run_dir=None, seconds=0, steps=0).verdict.startswith("No evaluation")  # type: ignore[arg-type]
