"""``parallel.strategy: fsdp`` in one process (a one-rank group, as on a single GPU), fast enough for every run.

The two-rank runs under torchrun are in ``tests/test_distributed.py`` (marked slow): they check
the step against the single-process one, the halved state, and the train command end to end.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from syngrpo.checkpoint import latest_checkpoint, load_state, model_dir
from syngrpo.runlog import read_jsonl
from syngrpo.trainer import Trainer

TERMS = "rewards.terms=[{name: length}, {name: format}]"
STEP = (TERMS, "algorithm.beta=0.04", "algorithm.shared_prefix=true", "optim.grad_accum=2", "optim.adam_eps=1.0",
        "parallel.timeout=60")


def _full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


def _one_step(cfg, run_dir, registry) -> tuple[dict, dict]:
    with Trainer(cfg, run_dir, registry=registry) as trainer:
        trainer.setup()
        metrics = trainer.train_step(1)
        params = {n: _full(p) for n, p in trainer.bundle.base_model.named_parameters()}
        if trainer.par.sharded:
            assert all(hasattr(p, "to_local") for p in trainer.bundle.model.parameters())  # DTensor shards
            assert all(hasattr(p, "to_local") for p in trainer.ref_model.parameters())  # the reference too
    return metrics, params


def test_fsdp_in_one_process_takes_the_plain_step(tiny_policy_dir, tmp_path, registry, config_for):
    plain_metrics, plain = _one_step(config_for(tiny_policy_dir, *STEP), tmp_path / "plain", registry)
    fsdp_metrics, fsdp = _one_step(config_for(tiny_policy_dir, *STEP, "parallel.strategy=fsdp"), tmp_path / "fsdp",
                                   registry)
    assert plain_metrics["reward/total"] == pytest.approx(fsdp_metrics["reward/total"], abs=1e-6)
    initial = _initial(tiny_policy_dir)
    moved = max(float((plain[n] - p0).abs().max()) for n, p0 in initial.items())
    gap = max(float((plain[n] - fsdp[n]).abs().max()) for n in initial)
    assert moved > 1e-6 and gap <= 1e-3 * moved, (gap, moved)


def _initial(policy_dir) -> dict[str, torch.Tensor]:
    from syngrpo.models.policy import load_policy

    return {n: p.detach().clone() for n, p in load_policy(policy_dir).model.named_parameters()}


def test_fsdp_bf16_checkpoint_holds_full_float32_weights_evaluates_and_resumes_exactly(
        tiny_policy_dir, tmp_path, registry, config_for):
    from syngrpo.evaluate import evaluate_checkpoint

    cfg = config_for(tiny_policy_dir, TERMS, "parallel.strategy=fsdp", "model.dtype=bfloat16", "optim.max_steps=3",
                     "logging.save_every=2", "optim.lr=1e-6", "parallel.timeout=60")
    with Trainer(cfg, tmp_path / "straight", registry=registry) as t:
        t.train()
    with Trainer(cfg, tmp_path / "stopped", registry=registry) as t:
        t.train(until=2)
    ckpt = latest_checkpoint(tmp_path / "stopped")
    saved = load_file(str(model_dir(ckpt) / "model.safetensors"))
    full = {}
    for f in tiny_policy_dir.glob("*.safetensors"):
        full.update(load_file(str(f)))
    assert set(saved) == set(full) and all(saved[n].shape == full[n].shape for n in saved)  # gathered, not shards
    assert all(v.dtype == torch.float32 for v in saved.values())  # the masters
    _, blob = load_state(ckpt)
    assert all(isinstance(k, str) for k in blob["optimizer"]["state"])  # keyed by name: any strategy resumes it
    with Trainer(cfg, tmp_path / "stopped", resume=tmp_path / "stopped", registry=registry) as t:
        t.train()
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")
    for a, b in zip(straight, resumed, strict=True):
        a = {k: v for k, v in a.items() if not k.startswith("time/")}
        b = {k: v for k, v in b.items() if not k.startswith("time/")}
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), f"step {a['step']}"
    # the sharded run's checkpoint evaluates in a plain process
    plain = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"strategy": "auto"})})
    result, json_path, _ = evaluate_checkpoint(plain, tmp_path / "stopped", progress=False, registry=registry)
    assert json_path.is_file() and "acc@0.5" in result.metrics


def test_an_unknown_parallel_strategy_is_a_config_error():
    from syngrpo.config import load_train_config
    from syngrpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"parallel\.strategy"):
        load_train_config(None, ["parallel.strategy=deepspeed", "synthesis.mode=off"])


def test_fsdp_with_lora_is_refused_before_any_model_loads(tiny_policy_dir, tmp_path, registry, config_for):
    from syngrpo.errors import ConfigError

    cfg = config_for(tiny_policy_dir, "parallel.strategy=fsdp", "model.lora.enabled=true", "parallel.timeout=60")
    with Trainer(cfg, tmp_path, registry=registry) as trainer, pytest.raises(ConfigError, match="fsdp .*lora"):
        trainer.setup()


def test_optimizer_state_is_saved_by_name_and_an_older_positional_state_still_loads():
    from syngrpo.parallel import load_optimizer_state_by_name, optimizer_state_by_name

    def trained():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.randn(5, 3)).sum().backward()
        optimizer.step()
        return model, optimizer

    model, optimizer = trained()
    by_name = optimizer_state_by_name(model, optimizer)
    assert set(by_name["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    for state in (by_name, optimizer.state_dict()):  # by name, and keyed by position as before
        fresh_model, _ = trained()
        fresh = torch.optim.AdamW(fresh_model.parameters(), lr=1e-3)
        load_optimizer_state_by_name(fresh_model, fresh, state)
        for p, q in zip(optimizer.param_groups[0]["params"], fresh.param_groups[0]["params"], strict=True):
            assert torch.equal(optimizer.state[p]["exp_avg_sq"], fresh.state[q]["exp_avg_sq"])
