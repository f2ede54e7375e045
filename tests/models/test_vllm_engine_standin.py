"""The ``vllm`` rollout engine at its boundary: a stand-in ``vllm`` package records what the engine hands it.

vLLM is CUDA only and cannot be installed on these machines, so every test here drives the real
:class:`syngrpo_vllm.engine.VLLMRolloutEngine` (and, for sleep mode, the real trainer) against
:mod:`standin_vllm`, and says so in its name.  What is checked is what the engine asks of vLLM:
the external launcher under a multi-rank world, the logit bias that keeps the vision special
tokens from being sampled, weights handed over one module at a time (gathered from FSDP2
``DTensor`` shards in a real 2-rank gloo run), and sleep / wake-up around the update.

The file doubles as the worker script ``torchrun`` runs for the FSDP test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import standin_vllm  # noqa: E402


@pytest.fixture
def vllm_standin(monkeypatch):
    mod = standin_vllm.install(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return mod


def _engine(bundle, **options):
    from syngrpo_vllm.engine import VLLMRolloutEngine

    return VLLMRolloutEngine(bundle, **options)


def test_external_launcher_requested_under_a_2_rank_world_with_standin_vllm(vllm_standin, policy, monkeypatch):
    from syngrpo.errors import ConfigError

    single = _engine(policy)
    single.llm(policy)
    assert "distributed_executor_backend" not in vllm_standin.LLM.instances[-1].kwargs

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    engine = _engine(policy, seed=7)
    engine.llm(policy)
    kwargs = vllm_standin.LLM.instances[-1].kwargs
    assert kwargs["distributed_executor_backend"] == "external_launcher"
    assert kwargs["seed"] == 8  # each rank its own sampling stream
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 under torchrun"):
        _engine(policy, tensor_parallel_size=2)


def test_suppressed_ids_are_biased_out_and_never_sampled_with_standin_vllm(vllm_standin, policy, two_images):
    from syngrpo.models.policy import encode_prompts

    assert len(policy.suppress_token_ids) == 5  # <|vision_start|> ... <|video_pad|>
    vllm_standin.LLM.vocab_size = len(policy.tokenizer)
    engine = _engine(policy)
    batch = encode_prompts(policy, two_images, ["Locate the circle.", "Locate the square."])
    rollout = engine.generate(policy, batch, num_generations=4, temperature=1.0, top_p=1.0, max_new_tokens=40,
                              generator_seed=3)
    params = next(d for name, d in vllm_standin.LLM.instances[-1].calls if name == "generate")
    assert params.logit_bias == {t: -100.0 for t in policy.suppress_token_ids}
    assert params.stop_token_ids == list(policy.eos_token_ids)
    sampled = set(rollout.completion_ids[rollout.completion_mask.bool()].tolist())
    assert len(sampled) > 20 and not sampled & set(policy.suppress_token_ids)
    assert rollout.completion_ids.shape[0] == 2 * 4


def test_weights_sync_one_module_at_a_time_with_standin_vllm(vllm_standin, fresh_policy):
    import torch

    model = fresh_policy.model
    engine = _engine(fresh_policy)
    engine.llm(fresh_policy)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # an "update" the engine must hand over
    engine.sync_weights(model)
    llm = vllm_standin.LLM.instances[-1]
    state = model.state_dict()
    received = [(n, t) for batch in llm.loaded for n, t in batch]
    assert [n for n, _ in received] == list(state)  # the state dict's names, in its order
    for name, tensor in received:
        assert torch.equal(tensor, state[name]), name
    # one module per batch: every name of a batch shares the owning module's prefix
    owners = [{n.rsplit(".", 1)[0] for n, _ in batch} for batch in llm.loaded]
    assert all(len(o) == 1 for o in owners) and len(llm.loaded) > 20
    assert llm.calls[-1] == ("reset_prefix_cache", None)


def test_sleep_before_the_update_and_wake_after_it_through_the_trainer_with_standin_vllm(
        vllm_standin, tiny_policy_dir, tmp_path):
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.configio import load_config
    from syngrpo.trainer import Trainer

    sets = [f"model.policy={tiny_policy_dir}", "model.device=cpu", "model.dtype=float32", "data.toy.n_train=4",
            "data.toy.n_eval=2", "data.toy.image_size=56", "rollout.engine=vllm", "rollout.num_generations=2",
            "rollout.max_new_tokens=8", "rollout.response_format=plain", "rollout.engine_options.enable_sleep_mode=true",
            "synthesis.mode=off", "optim.batch_size=2", "optim.max_steps=1", "optim.lr=1e-2", "sft.enabled=false",
            "eval.at_end=false", "logging.progress=false", "logging.tensorboard=false", "logging.plots=false",
            "logging.gallery=false", "logging.samples_every=0"]
    cfg = load_config(TrainConfig, None, sets)
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
        vllm_standin.LLM.vocab_size = len(trainer.bundle.tokenizer)
        weight = trainer.bundle.model.lm_head.weight
        before = weight.detach().clone()
        seen: dict[str, bool] = {}

        def on_call(name, detail):  # was the policy already updated when vLLM was told this?
            seen.setdefault(f"{name}:{detail}", not torch.equal(weight.detach(), before))

        trainer.engine.llm(trainer.bundle).on_call = on_call
        trainer.train_step(1)
        llm = vllm_standin.LLM.instances[-1]
    assert llm.kwargs["enable_sleep_mode"] is True
    names = [n for n, _ in llm.calls]
    first_load = names.index("load_weights")
    assert names[:3] == ["init", "generate", "sleep"] and llm.calls[2][1] == 1
    assert llm.calls[first_load - 1] == ("wake_up", ["weights"])  # weights back first ...
    assert names[first_load:].count("load_weights") == len(llm.loaded) > 20
    assert llm.calls[-2] == ("wake_up", ["kv_cache"])  # ... the KV cache after the new weights are in
    assert names[-1] == "reset_prefix_cache"
    assert seen == {"generate:" + repr(llm.calls[1][1]): False, "sleep:1": False, "wake_up:['weights']": True,
                    "wake_up:['kv_cache']": True, "reset_prefix_cache:None": True}


# ---- FSDP2 DTensor parameters, two gloo ranks ----------------------------------------------------------


def fsdp_worker(model_dir: str, out: str) -> None:
    """One rank: shard the tiny policy with fully_shard, sync it into the stand-in, compare with the full weights."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from syngrpo.models.policy import load_policy

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    standin_vllm.install()
    bundle = load_policy(model_dir)
    full = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    for layer in bundle.model.model.language_model.layers:
        fully_shard(layer)
    for block in bundle.model.model.visual.blocks:
        fully_shard(block)
    fully_shard(bundle.model)
    params = list(bundle.model.parameters())
    sharded = all(isinstance(p, DTensor) for p in params)
    local_rows = sum(p.to_local().shape[0] for p in params if p.dim())
    engine = _engine(bundle)
    engine.llm(bundle)
    engine.sync_weights(bundle.model)
    llm = standin_vllm.LLM.instances[-1]
    received = [(n, t) for batch in llm.loaded for n, t in batch]
    mismatched = [n for n, t in received if isinstance(t, DTensor) or not torch.equal(t, full[n])]
    result = {
        "rank": rank, "world": world, "sharded": sharded, "backend": llm.kwargs.get("distributed_executor_backend"),
        "names_in_order": [n for n, _ in received] == list(full), "mismatched": mismatched,
        "one_module_per_batch": all(len({n.rsplit(".", 1)[0] for n, _ in b}) == 1 for b in llm.loaded),
        "local_rows": local_rows, "full_rows": sum(t.shape[0] for n, t in full.items() if t.dim()),
    }
    gathered = [None] * world
    dist.all_gather_object(gathered, result)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_dtensor_weights_reach_vllm_whole_module_by_module_with_standin_vllm(tiny_policy_dir, tmp_path):
    out = tmp_path / "fsdp.json"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", __file__, "--model", str(tiny_policy_dir), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["world"] == 2 and r["sharded"] and r["backend"] == "external_launcher"
        assert r["local_rows"] < r["full_rows"]  # each rank held only its shard ...
        assert r["names_in_order"] and r["one_module_per_batch"]
        assert r["mismatched"] == []  # ... and vLLM received the full, unsharded weights


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="FSDP2 weight sync into the stand-in vLLM, run by torchrun")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fsdp_worker(args.model, args.out)


def test_the_vllm_engine_says_it_samples_from_its_own_weights():
    """Under FSDP the trainer gathers every shard around a rollout only for engines that sample from the policy."""
    from syngrpo_vllm.engine import VLLMRolloutEngine

    assert VLLMRolloutEngine.samples_from_policy is False
