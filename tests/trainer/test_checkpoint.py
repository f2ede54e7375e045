"""Checkpoints hold the model (safetensors), optimizer, scheduler, RNG states and the trainer's JSON state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from syngrpo.rundir.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    model_dir,
    restore_rng_state,
    run_dir_of,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return Qwen2ForCausalLM(cfg)


def _optim(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    loss = model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss
    loss.backward()
    opt.step()
    sched.step()
    return opt, sched


def test_rng_state_restores_every_generator():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_checkpoint_round_trips_model_optimizer_scheduler_and_state(tmp_path, tiny_lm):
    from transformers import Qwen2ForCausalLM

    opt, sched = _optim(tiny_lm)
    ckpt = save_checkpoint(tmp_path, 7, model=tiny_lm, processor=None, optimizer=opt, scheduler=sched,
                           state={"pool": {"epoch": 2}}, extra_torch={"engine": {"calls": 3}})
    assert (model_dir(ckpt) / "model.safetensors").is_file()
    assert latest_checkpoint(tmp_path) == ckpt and run_dir_of(ckpt) == tmp_path.resolve()

    state, blob = load_state(ckpt)
    assert state == {"step": 7, "pool": {"epoch": 2}}
    assert blob["engine"] == {"calls": 3}
    opt2 = torch.optim.AdamW(tiny_lm.parameters(), lr=1e-3)
    opt2.load_state_dict(blob["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    sched2.load_state_dict(blob["scheduler"])
    assert sched2.last_epoch == 1

    reloaded = Qwen2ForCausalLM.from_pretrained(model_dir(ckpt))
    for (name, a), b in zip(tiny_lm.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_only_the_newest_checkpoints_are_kept_and_latest_points_at_the_last(tmp_path, tiny_lm):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, model=tiny_lm, processor=None, optimizer=None, scheduler=None,
                        state={}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000006"]
    assert latest_checkpoint(tmp_path).name == "step-000006"


def test_a_half_written_checkpoint_is_never_latest(tmp_path, tiny_lm):
    save_checkpoint(tmp_path, 1, model=tiny_lm, processor=None, optimizer=None, scheduler=None, state={})
    (tmp_path / "checkpoints" / "step-000002.tmp").mkdir()
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-000001"


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
