"""``parallel.strategy: fsdp`` in one process (a one-rank group, as on a single GPU), fast enough for every run.

The two-rank runs under torchrun are in ``tests/test_distributed.py`` (marked slow): they check
the step against the single-process one, the halved state, and the train command end to end.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from syngrpo.rundir.checkpoint import latest_checkpoint, load_state, model_dir
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.trainer import Trainer

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


def _metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(run_dir / "metrics.jsonl")]


def _same_metrics(a_dir, b_dir) -> None:
    a, b = _metrics(a_dir), _metrics(b_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7), f"step {x['step']}"


def test_fsdp_bf16_checkpoint_is_sharded_consolidates_to_float32_masters_evaluates_exports_and_resumes_exactly(
        tiny_policy_dir, tmp_path, registry, config_for):
    """Issue 20 item 4: under FSDP a checkpoint is DCP shards (no gathered model); eval and export consolidate it."""
    from syngrpo.commands.export import export_policy
    from syngrpo.rundir.sharded_checkpoint import consolidated_model_state, consolidated_optimizer_state, is_sharded
    from syngrpo.train.evaluate import evaluate_checkpoint

    cfg = config_for(tiny_policy_dir, TERMS, "parallel.strategy=fsdp", "model.dtype=bfloat16", "optim.max_steps=3",
                     "logging.save_every=2", "optim.lr=1e-6", "parallel.timeout=60")
    with Trainer(cfg, tmp_path / "straight", registry=registry) as t:
        t.train()
    with Trainer(cfg, tmp_path / "stopped", registry=registry) as t:
        t.train(until=2)
    ckpt = latest_checkpoint(tmp_path / "stopped")
    assert is_sharded(ckpt) and list((ckpt / "sharded").glob("*.distcp"))
    assert not list(model_dir(ckpt).glob("*.safetensors")) and (model_dir(ckpt) / "config.json").is_file()
    saved = consolidated_model_state(ckpt)
    full = _initial(tiny_policy_dir)  # keyed as the model names its parameters (files use the hub's names)
    assert set(saved) == set(full) and all(saved[n].shape == full[n].shape for n in saved)  # whole tensors
    assert all(v.dtype == torch.float32 for v in saved.values())  # the masters
    _, blob = load_state(ckpt)
    assert blob.get("optimizer") is None  # it lives in the shards, keyed by name: any strategy resumes it
    optim = consolidated_optimizer_state(ckpt)
    assert set(optim["state"]) == set(full) and optim["param_groups"][0]["lr"] > 0
    with Trainer(cfg, tmp_path / "stopped", resume=tmp_path / "stopped", registry=registry) as t:
        t.train()
    _same_metrics(tmp_path / "straight", tmp_path / "stopped")
    # the sharded run's checkpoint evaluates in a plain process, consolidated in memory
    plain = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"strategy": "auto"})})
    result, json_path, _ = evaluate_checkpoint(plain, ckpt, progress=False, registry=registry)
    assert json_path.is_file() and "acc@0.5" in result.metrics
    # and exports: a save_pretrained directory in bf16, the consolidated masters cast
    from syngrpo.models.policy import load_policy

    out = export_policy(ckpt, tmp_path / "export", dtype="bfloat16")
    assert {v.dtype for v in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    exported = dict(load_policy(out, dtype="bfloat16").model.named_parameters())
    assert set(exported) == set(saved)
    assert all(torch.equal(exported[n], saved[n].to(torch.bfloat16)) for n in saved)
    assert not list(model_dir(ckpt).glob("*.safetensors"))  # consolidation wrote nothing into the checkpoint
    # the checkpoint's model/ reads like a model directory (model.policy of a next run, a describer)
    again = dict(load_policy(model_dir(ckpt), dtype="float32").model.named_parameters())
    assert all(torch.equal(again[n], saved[n]) for n in saved)


def test_a_sharded_checkpoint_resumes_in_a_plain_process_and_a_gathered_one_under_fsdp(
        tiny_policy_dir, tmp_path, registry, config_for):
    """Checkpoints cross layouts: FSDP's shards resume in one unsharded process (whole tensors, exactly the
    saved ones); the gathered layout (older versions, ``parallel.checkpoint: full``) resumes under FSDP exactly."""
    from syngrpo.rundir.sharded_checkpoint import consolidated_model_state, consolidated_optimizer_state, is_sharded

    sets = (TERMS, "parallel.strategy=fsdp", "optim.max_steps=3", "logging.save_every=2", "parallel.timeout=60",
            "algorithm.beta=0.04")
    cfg = config_for(tiny_policy_dir, *sets)
    with Trainer(cfg, tmp_path / "straight", registry=registry) as t:
        t.train()
    gathered = config_for(tiny_policy_dir, *sets, "parallel.checkpoint=full")
    with Trainer(gathered, tmp_path / "gathered", registry=registry) as t:
        t.train(until=2)
    ckpt = latest_checkpoint(tmp_path / "gathered")
    assert not is_sharded(ckpt) and (model_dir(ckpt) / "model.safetensors").is_file()
    with Trainer(cfg, tmp_path / "gathered", resume=tmp_path / "gathered", registry=registry) as t:
        t.train()
    _same_metrics(tmp_path / "straight", tmp_path / "gathered")
    assert is_sharded(latest_checkpoint(tmp_path / "gathered"))  # written in the run's own layout from then on

    with Trainer(cfg, tmp_path / "sharded", registry=registry) as t:
        t.train(until=2)
    ckpt = latest_checkpoint(tmp_path / "sharded")
    plain = config_for(tiny_policy_dir, *[s for s in sets if "strategy" not in s])
    with Trainer(plain, tmp_path / "sharded", resume=ckpt, registry=registry) as t:
        t.setup()
        assert t.par.strategy == "single" and t.step == 2
        weights = consolidated_model_state(ckpt)
        for name, p in t.bundle.model.named_parameters():
            assert torch.equal(p, weights[name]), name
        optim = consolidated_optimizer_state(ckpt)
        names = {id(p): n for n, p in t.bundle.model.named_parameters()}
        for p, st in t.optimizer.state.items():
            assert torch.equal(st["exp_avg_sq"], optim["state"][names[id(p)]]["exp_avg_sq"])
        t.train()
    assert [r["step"] for r in read_jsonl(tmp_path / "sharded" / "metrics.jsonl")] == [1, 2, 3]


def test_an_unknown_parallel_strategy_is_a_config_error():
    from syngrpo.config import load_train_config
    from syngrpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"parallel\.strategy"):
        load_train_config(None, ["parallel.strategy=deepspeed", "synthesis.mode=off"])


def test_optimizer_state_is_saved_by_name_and_an_older_positional_state_still_loads():
    from syngrpo.scale.optimizer_state import load_optimizer_state_by_name, optimizer_state_by_name

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
