"""Each built-in model family trains end to end on CPU (tiny model built from ``model.policy: tiny`` +
``model.family``, SFT warm start, Syn-GRPO with synthesis on, evaluation), and the reference answers of its
evaluation, written in the frames its prompts carry, score an REC reward of 1.0."""

from __future__ import annotations

import math

import pytest

from syngrpo.data.images import load_rgb
from syngrpo.models.policy import encode_prompts, load_policy
from syngrpo.perception.response import parse_response, render_response
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.evaluate import build_prompts
from syngrpo.train.sft import sft_targets
from syngrpo.train.trainer import Trainer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v", "internvl")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_end_to_end_and_its_reference_answers_score_one(family, tmp_path, registry, overrides_for):
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    sets = overrides_for("tiny", f"model.family={family}", f"model.tiny_dir={tmp_path / 'tiny'}",
                         "synthesis.transport=inprocess", "sft.enabled=true", "sft.steps=20", "sft.lr=3e-3",
                         "sft.batch_size=4", "eval.at_end=true", "eval.max_new_tokens=16", "logging.save_every=2",
                         mode="sync")
    cfg = load_config(TrainConfig, None, sets)
    run = tmp_path / "run"
    with Trainer(cfg, run, registry=registry) as trainer:
        summary = trainer.train()
        assert trainer.bundle.family.name == family
        task, samples = trainer.task, trainer.eval_samples
    records = read_jsonl(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    # synthesis on: the syn response format (diversity reward) and a live link to the data server
    assert all(r["synthesis/server_healthy"] == 1.0 and "reward/diversity" in r for r in steps)
    assert "eval/acc@0.5" in records[-1]
    assert summary is not None

    # the checkpoint reloads as the same family; the eval prompts' frames carry its convention
    bundle = load_policy(run / "checkpoints" / "step-000002" / "model")
    assert bundle.family.name == family
    images = [load_rgb(s.image) for s in samples]
    prompts = encode_prompts(bundle, images, build_prompts(task, samples, "syn"))
    accuracy = registry.create("rewards", "accuracy")
    exact = [parse_response(render_response("ok", task.format_answer(task.transform_solution(s.solution, f)),
                                            score=0.5, description="a beach", mode="syn"), "syn")
             for s, f in zip(samples, prompts.frames, strict=True)]
    assert accuracy(exact, samples, task=task, frames=prompts.frames) == pytest.approx([1.0] * len(samples))
    # the SFT targets round to integers, as the models write them: 0-1000 keeps ~1/1000 of the image
    rounded = [parse_response(sft_targets(task, s, "syn", frame=f), "syn")
               for s, f in zip(samples, prompts.frames, strict=True)]
    assert min(accuracy(rounded, samples, task=task, frames=prompts.frames)) > 0.9


def test_internvl_warm_start_skips_the_patch_grid_vision_pretraining_with_a_warning(tmp_path, registry, overrides_for,
                                                                                    caplog):
    """The dense vision pre-training trains a patch grid's tokens; InternVL's tiles are not one, so the quickstart's
    warm start (which turns it on) skips it and says so instead of failing on the missing ``visual`` tower."""
    import logging

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    sets = overrides_for("tiny", "model.family=internvl", f"model.tiny_dir={tmp_path / 'tiny'}", "sft.enabled=true",
                         "sft.steps=4", "sft.vision_pretrain.steps=2", "optim.max_steps=1")
    cfg = load_config(TrainConfig, None, sets)
    with caplog.at_level(logging.WARNING, logger="syngrpo.train.warm_start"):
        with Trainer(cfg, tmp_path / "run", registry=registry) as trainer:
            trainer.train()
    assert any("sft.vision_pretrain skipped" in r.getMessage() and "internvl" in r.getMessage() for r in caplog.records)
