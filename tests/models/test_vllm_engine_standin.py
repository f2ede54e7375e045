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
    assert [n for n, _ in llm.calls[-2:]] == ["reset_prefix_cache", "reset_encoder_cache"]


# ---- issue #20: the vLLM path before its first GPU run ----------------------------------------------------


def _rollout(engine, policy, images, *, G=2, temperature=1.0, max_new_tokens=12, seed=3):
    from syngrpo.models.policy import encode_prompts

    batch = encode_prompts(policy, images, ["Locate the circle.", "Locate the square."][: len(images)])
    return engine.generate(policy, batch, num_generations=G, temperature=temperature, top_p=1.0,
                           max_new_tokens=max_new_tokens, generator_seed=seed)


def test_limit_mm_per_prompt_is_settable_and_video_is_off_unless_asked_with_standin_vllm(vllm_standin, policy):
    _engine(policy, limit_mm_per_prompt={"image": 2}).llm(policy)  # used to raise TypeError: the key went twice
    assert vllm_standin.LLM.instances[-1].kwargs["limit_mm_per_prompt"] == {"image": 2, "video": 0}
    _engine(policy).llm(policy)
    assert vllm_standin.LLM.instances[-1].kwargs["limit_mm_per_prompt"] == {"image": 1, "video": 0}
    _engine(policy, limit_mm_per_prompt={"video": 1}).llm(policy)
    assert vllm_standin.LLM.instances[-1].kwargs["limit_mm_per_prompt"] == {"image": 1, "video": 1}


def test_max_model_len_is_the_image_text_and_completion_budget_with_standin_vllm(vllm_standin, policy, two_images):
    from syngrpo.errors import ConfigError

    # the tiny processor lets 448 x 448 px through: 448^2 / 28^2 = 256 image tokens at most
    assert policy.processor.image_processor.size["longest_edge"] == 448 * 448
    engine = _engine(policy)
    engine.set_max_new_tokens(40)  # the trainer passes max(rollout, eval) max_new_tokens
    engine.llm(policy)
    assert vllm_standin.LLM.instances[-1].kwargs["max_model_len"] == 256 + 256 + 40
    _engine(policy, prompt_text_tokens=64, max_model_len=None).llm(policy, max_new_tokens=10)
    assert vllm_standin.LLM.instances[-1].kwargs["max_model_len"] == 256 + 64 + 10
    _engine(policy, max_model_len=4096).llm(policy, max_new_tokens=10)  # given: kept
    assert vllm_standin.LLM.instances[-1].kwargs["max_model_len"] == 4096
    small = _engine(policy, max_model_len=40)  # a prompt that cannot fit is refused, naming the knobs
    with pytest.raises(ConfigError, match="prompt_text_tokens.*max_model_len"):
        _rollout(small, policy, two_images, max_new_tokens=12)


def test_cuda_cache_is_emptied_before_every_wake_up_with_standin_vllm(vllm_standin, fresh_policy, two_images,
                                                                    monkeypatch):
    import torch

    engine = _engine(fresh_policy, enable_sleep_mode=True)
    llm = engine.llm(fresh_policy)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: llm._note("torch.cuda.empty_cache"))
    _rollout(engine, fresh_policy, two_images)
    engine.sync_weights(fresh_policy.model)  # staged wake-up: weights, then the KV cache
    _rollout(engine, fresh_policy, two_images)
    engine.wake()  # a full wake-up without a sync (evaluation after sampling)
    names = [n for n, _ in llm.calls]
    wakes = [i for i, n in enumerate(names) if n == "wake_up"]
    assert len(wakes) == 3
    assert all(names[i - 1] == "torch.cuda.empty_cache" for i in wakes), names


def test_sleep_level_2_discards_the_weights_and_every_one_is_reloaded_before_sampling_with_standin_vllm(
        vllm_standin, fresh_policy, two_images):
    from syngrpo.errors import ConfigError

    engine = _engine(fresh_policy, enable_sleep_mode=True, sleep_level=2)
    _rollout(engine, fresh_policy, two_images)
    llm = vllm_standin.LLM.instances[-1]
    assert ("sleep", 2) in llm.calls and llm.discarded
    n_params = len(fresh_policy.model.state_dict())
    loads = len(llm.loaded)
    engine.sync_weights(fresh_policy.model)  # the update's sync: every parameter, not a delta
    assert sum(len(b) for b in llm.loaded[loads:]) == n_params and not llm.discarded
    _rollout(engine, fresh_policy, two_images)  # asleep (level 2) again: sampling again must reload first
    loads = len(llm.loaded)
    _rollout(engine, fresh_policy, two_images)  # the stand-in refuses generate() on discarded weights
    assert sum(len(b) for b in llm.loaded[loads:]) == n_params
    with pytest.raises(ConfigError, match="sleep_level"):
        _engine(fresh_policy, enable_sleep_mode=True, sleep_level=3)


def test_greedy_with_a_group_decodes_once_and_repeats_it_like_the_hf_engine_with_standin_vllm(
        vllm_standin, policy, two_images):
    vllm_standin.LLM.vocab_size = len(policy.tokenizer)
    engine = _engine(policy)
    rollout = _rollout(engine, policy, two_images, G=3, temperature=0.0)  # vLLM refuses n=3 at temperature 0
    params = next(d for name, d in vllm_standin.LLM.instances[-1].calls if name == "generate")
    assert params.n == 1 and params.temperature == 0.0
    assert rollout.completion_ids.shape[0] == 2 * 3 and rollout.group_size == 3
    for p in range(2):
        group = rollout.completion_ids[p * 3:(p + 1) * 3]
        assert (group == group[0]).all()
    assert rollout.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]


def test_the_first_rollout_samples_the_policys_current_weights_not_the_checkpoint_with_standin_vllm(
        vllm_standin, fresh_policy, two_images):
    import torch

    with torch.no_grad():
        fresh_policy.model.lm_head.weight.add_(1.0)  # e.g. an SFT warm start: no longer the checkpoint on disk
    engine = _engine(fresh_policy)
    _rollout(engine, fresh_policy, two_images)
    llm = vllm_standin.LLM.instances[-1]
    names = [n for n, _ in llm.calls]
    assert "load_weights" in names and names.index("load_weights") < names.index("generate")
    received = {n: t for batch in llm.loaded for n, t in batch}
    assert torch.equal(received["lm_head.weight"], fresh_policy.model.lm_head.weight.detach())


def test_a_sync_resets_the_encoder_and_prefix_caches_so_no_image_gets_old_features_with_standin_vllm(
        vllm_standin, fresh_policy, two_images):
    import torch

    engine = _engine(fresh_policy)
    _rollout(engine, fresh_policy, two_images)  # caches filled with the first weights' features
    with torch.no_grad():
        fresh_policy.model.model.visual.blocks[0].mlp.down_proj.weight.mul_(2.0)  # a new vision tower
    engine.sync_weights(fresh_policy.model)
    _rollout(engine, fresh_policy, two_images)  # the same two images again
    llm = vllm_standin.LLM.instances[-1]
    assert llm.stale == []  # no request was answered from an entry the old weights computed
    assert [n for n, _ in llm.calls[-3:-1]] == ["reset_prefix_cache", "reset_encoder_cache"]


def test_engine_log_probs_are_on_the_sampling_temperature_as_the_trainer_scores_with_standin_vllm(
        vllm_standin, policy, two_images):
    """vLLM's default log-probs are raw (temperature 1); the trainer scores at the sampling temperature."""
    import torch

    from syngrpo.models.policy import encode_prompts
    from syngrpo.models.scoring import completion_logprobs

    vllm_standin.LLM.vocab_size = len(policy.tokenizer)
    batch = encode_prompts(policy, two_images, ["Locate the circle.", "Locate the square."])
    row_of = {text: i for i, text in enumerate(batch.prompts)}

    def policy_logprobs(request, ids, temperature):  # what vLLM would report: the real policy's log-probs
        one = batch.select_prompts([row_of[request["prompt"]]])
        t = torch.tensor([ids])
        with torch.no_grad():
            logp, _ = completion_logprobs(policy.model, one, t, torch.ones_like(t), group_size=1,
                                          temperature=temperature)
        return logp[0].tolist()

    vllm_standin.LLM.logprob_fn = policy_logprobs
    engine = _engine(policy, return_logprobs=True)
    rollout = engine.generate(policy, batch, num_generations=2, temperature=0.7, top_p=1.0, max_new_tokens=6,
                              generator_seed=1)
    with torch.no_grad():  # the trainer's side of logprob/engine_max_abs_diff
        ours, _ = completion_logprobs(policy.model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                      group_size=2, temperature=0.7)
    gap = float(((ours - rollout.logprobs).abs() * rollout.completion_mask).max())
    assert gap < 1e-4, gap
    assert vllm_standin.LLM.instances[-1].kwargs["logprobs_mode"] == "processed_logprobs"


FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v", "internvl"]


@pytest.mark.parametrize("family", FAMILIES)
def test_vllm_is_told_the_resolution_the_trainer_scores_at_in_every_family_with_standin_vllm(
        vllm_standin, family, tmp_path):
    """vLLM builds the checkpoint's processor with ``mm_processor_kwargs`` and calls it with them again
    (``InputProcessingContext.get_hf_processor`` / ``call_hf_processor``, vllm/multimodal/processing/context.py,
    0.32-0.34); done here with the real transformers processor, the grid must be the trainer's."""
    import warnings

    from PIL import Image

    from syngrpo.models.policy import encode_prompts, load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy

    path = build_tiny_policy(tmp_path / family, family=family)
    bundle = load_policy(str(path), max_pixels=128 * 128)  # below the processor's own 448 x 448
    image = Image.new("RGB", (400, 300), (200, 120, 40))
    scored = encode_prompts(bundle, [image], ["Where is it?"])
    _engine(bundle).llm(bundle)
    mm = vllm_standin.LLM.instances[-1].kwargs["mm_processor_kwargs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an ignored kwarg only warns: that is the failure this test catches
        processor = bundle.family.processor_class().from_pretrained(str(path), **mm)
        sampled = processor(text=scored.prompts, images=[image], return_tensors="pt", **mm)
    if "image_grid_thw" in sampled:  # the patch-grid families; InternVL's tiles show in the ids and pixel rows
        assert sampled["image_grid_thw"].tolist() == scored.image_grid_thw.tolist()
    assert sampled["input_ids"].tolist() == scored.input_ids.tolist()
    assert tuple(sampled["pixel_values"].shape) == tuple(scored.pixel_values.shape)
    # two images in one prompt: the request's image list, processed as vLLM does, gives the trainer's ids and grids
    second = Image.new("RGB", (120, 260), (40, 120, 200))
    scored = encode_prompts(bundle, [[image, second]], ["Where is it in the second image?"], box_images=[1])
    request = bundle.family.vllm_request(scored.prompts[0], scored.row_images(0))
    assert [im.size for im in request["multi_modal_data"]["image"]] == [(400, 300), (120, 260)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = processor(text=[request["prompt"]], images=request["multi_modal_data"]["image"], return_tensors="pt",
                            **mm)
    if "image_grid_thw" in sampled:
        assert sampled["image_grid_thw"].tolist() == scored.image_grid_thw.tolist()
    assert sampled["input_ids"].tolist() == scored.input_ids.tolist()
    assert tuple(sampled["pixel_values"].shape) == tuple(scored.pixel_values.shape)


# ---- through the trainer --------------------------------------------------------------------------------


def _trainer_sets(policy_dir, *extra):
    return [f"model.policy={policy_dir}", "model.device=cpu", "model.dtype=float32", "data.toy.n_train=4",
            "data.toy.n_eval=2", "data.toy.image_size=56", "rollout.engine=vllm", "rollout.num_generations=2",
            "rollout.max_new_tokens=8", "rollout.response_format=plain", "synthesis.mode=off",
            "optim.batch_size=2", "optim.max_steps=1", "optim.lr=1e-2", "sft.enabled=false", "eval.at_end=false",
            "logging.progress=false", "logging.tensorboard=false", "logging.plots=false", "logging.gallery=false",
            "logging.samples_every=0", *extra]


def test_sleep_before_the_update_and_wake_after_it_through_the_trainer_with_standin_vllm(
        vllm_standin, tiny_policy_dir, tmp_path, monkeypatch):
    """The order of what vLLM is told around one step, whatever the random policy samples (rewards of 0 leave
    the weights where they were, so the order is recorded, not inferred from whether weights moved)."""
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.train.trainer import Trainer

    cfg = load_config(TrainConfig, None, _trainer_sets(tiny_policy_dir, "rollout.engine_options.enable_sleep_mode=true",
                                                       "eval.max_new_tokens=20"))
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
        llm = vllm_standin.LLM.instances[-1]
        vllm_standin.LLM.vocab_size = len(trainer.bundle.tokenizer)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: llm._note("torch.cuda.empty_cache"))
        trainer.optimizer.register_step_post_hook(lambda *_: llm._note("optimizer.step"))
        at_setup = len(llm.calls)
        trainer.train_step(1)
    assert llm.kwargs["enable_sleep_mode"] is True
    assert llm.kwargs["max_model_len"] == 256 + 256 + 20  # image + text allowance + max(rollout 8, eval 20)
    names = [n for n, _ in llm.calls[at_setup:]]
    loads = [i for i, n in enumerate(names) if n == "load_weights"]
    loaded = [n for name, d in llm.calls[at_setup:] if name == "load_weights" for n in d]
    assert loaded == list(trainer.bundle.model.state_dict()) and len(loads) > 20  # every module, once
    assert names[:loads[0]] == ["generate", "sleep", "optimizer.step", "torch.cuda.empty_cache", "wake_up"]
    assert llm.calls[at_setup + 1] == ("sleep", 1) and llm.calls[at_setup + loads[0] - 1] == ("wake_up", ["weights"])
    assert loads == list(range(loads[0], loads[-1] + 1))  # weights back first, all of them loaded ...
    assert names[loads[-1] + 1:] == ["torch.cuda.empty_cache", "wake_up", "reset_prefix_cache", "reset_encoder_cache"]
    assert llm.calls[at_setup + loads[-1] + 2] == ("wake_up", ["kv_cache"])  # ... then the KV cache


def test_setup_hands_vllm_the_warm_started_policy_before_any_sampling_with_standin_vllm(
        vllm_standin, tiny_policy_dir, tmp_path):
    """After an SFT warm start the weights on disk (the hub's) are not the policy's: step 1 and the start-of-run
    evaluation must sample the warm-started weights."""
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.train.trainer import Trainer

    cfg = load_config(TrainConfig, None, _trainer_sets(tiny_policy_dir, "sft.enabled=true", "sft.steps=2",
                                                       "sft.plain_steps=0", "sft.n_images=null",
                                                       "sft.vision_pretrain.steps=0"))
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
        llm = vllm_standin.LLM.instances[-1]
        state = trainer.bundle.model.state_dict()
    assert llm.model == str(tiny_policy_dir)  # vLLM read the architecture (and first weights) from the hub dir ...
    assert "generate" not in [n for n, _ in llm.calls]
    received = {n: t for batch in llm.loaded for n, t in batch}
    assert set(received) == set(state)  # ... and was then given every weight of the warm-started policy
    assert all(torch.equal(received[n], state[n]) for n in state)
    from safetensors.torch import load_file

    hub = load_file(str(tiny_policy_dir / "model.safetensors"))
    assert not torch.equal(hub["lm_head.weight"], state["lm_head.weight"])  # the warm start moved it


def test_a_resumed_run_hands_vllm_the_checkpoint_weights_at_setup_with_standin_vllm(
        vllm_standin, tiny_policy_dir, tmp_path):
    """Every rank of a resumed run samples the checkpoint's weights from its first rollout (other ranks built
    their engine from the hub weights and used to wait one update for the first sync)."""
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.train.trainer import Trainer

    vllm_standin.LLM.vocab_size = 64
    cfg = load_config(TrainConfig, None, _trainer_sets(tiny_policy_dir, "optim.max_steps=2",
                                                       "logging.save_every=1"))
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.train(until=1)
    with Trainer(cfg, tmp_path / "run", resume=tmp_path / "run") as resumed:
        resumed.setup()
        llm = vllm_standin.LLM.instances[-1]
        state = resumed.bundle.model.state_dict()
    assert resumed.step == 1 and "generate" not in [n for n, _ in llm.calls]
    received = {n: t for batch in llm.loaded for n, t in batch}
    assert set(received) == set(state) and all(torch.equal(received[n], state[n]) for n in state)


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
