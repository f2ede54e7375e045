"""Issue 5 item 5: one data-parallel optimisation step equals the single-process step on the same global batch.

``torchrun --standalone --nproc_per_node=2`` starts two CPU ranks (gloo), twice:

* **the scoring + loss path**: each rank wraps the tiny Qwen2.5-VL in
  ``DistributedDataParallel`` and takes one prompt (G = 3 completions) of a
  two-prompt global batch: :func:`syngrpo.models.scoring.completion_logprobs` (naive and
  shared-prefix), the ``grpo`` policy loss, backward, one SGD step.  DDP averages
  the gradients, so the single-process reference is the mean of the two
  per-prompt losses on the whole batch at once (one left-padded batch);
* **the trainer**: one :meth:`syngrpo.train.trainer.Trainer.train_step` per rank, each
  on its half of a 4-prompt global batch, against one single-process step on all
  4 prompts.  Sampling must not depend on how the batch is split, so the rollout
  engine here (``per_prompt_hf``, a real plugin registered below) runs the ``hf``
  engine one prompt at a time with a seed taken from the prompt itself; the
  reward is the completion's length (a random tiny model earns no other reward).
  ``adam_eps`` = 1 makes AdamW's first step proportional to the gradient (near
  zero, ``g / (|g| + eps)`` would turn float noise into sign flips).

Gradients and parameters after the step must agree to float rounding.  The file
doubles as the worker script torchrun runs.  The trainer's own test
(``tests/trainer/test_data_parallel.py``) checks that the ranks stay identical
over several steps, with synthesis; this one checks that they compute the
single-process step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syngrpo.hookspecs import hookimpl

GROUP = 3
TOKENS = 12
LR = 0.5


def _setup(model_dir: str):
    """The policy, the two-prompt batch (different image sizes: different lengths, left padding) and completions."""
    import torch
    from PIL import Image, ImageDraw

    from syngrpo.models.policy import encode_prompts, load_policy

    torch.manual_seed(0)
    policy = load_policy(model_dir)
    a = Image.new("RGB", (112, 112), (230, 230, 225))
    ImageDraw.Draw(a).ellipse([20, 30, 60, 70], fill=(220, 40, 40))
    b = Image.new("RGB", (168, 112), (210, 215, 220))
    ImageDraw.Draw(b).rectangle([100, 20, 150, 90], fill=(40, 90, 230))
    batch = encode_prompts(policy, [a, b], ["Locate the red circle.", "Locate the blue square on the right side."])
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, len(policy.tokenizer) - 20, (2 * GROUP, TOKENS), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[4, 5:] = 0
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.8, 0.2, -1.0])
    return policy, batch, ids, mask, advantages


def _loss(model, batch, ids, mask, advantages, *, shared_prefix: bool):
    from syngrpo.algo.losses import GRPOLoss
    from syngrpo.models.scoring import completion_logprobs

    logp, _ = completion_logprobs(model, batch, ids, mask, group_size=GROUP, shared_prefix=shared_prefix)
    loss, _ = GRPOLoss(beta=0.0)(logp=logp, old_logp=None, ref_logp=None, advantages=advantages, mask=mask)
    return loss


def _state(model) -> dict:
    from syngrpo.models.modules import unwrap_model

    base = unwrap_model(model)
    return {
        "grads": {n: p.grad.detach().clone() for n, p in base.named_parameters() if p.grad is not None},
        "params": {n: p.detach().clone() for n, p in base.named_parameters()},
    }


def single_process_step(model_dir: str, *, shared_prefix: bool) -> dict:
    """The whole global batch in one process: loss = mean of the two per-prompt losses."""
    import torch

    from syngrpo.algo.losses import GRPOLoss
    from syngrpo.models.scoring import completion_logprobs

    policy, batch, ids, mask, adv = _setup(model_dir)
    model = policy.model.train()
    rows = [list(range(0, GROUP)), list(range(GROUP, 2 * GROUP))]
    # both prompts scored together (one left-padded batch), the loss split per prompt
    logp_all, _ = completion_logprobs(model, batch, ids, mask, group_size=GROUP, shared_prefix=shared_prefix)
    losses = [GRPOLoss(beta=0.0)(logp=logp_all[r], old_logp=None, ref_logp=None, advantages=adv[r],
                                 mask=mask[r])[0] for r in rows]
    (sum(losses) / len(losses)).backward()
    grads = _state(model)["grads"]
    torch.optim.SGD(model.parameters(), lr=LR).step()
    out = _state(model)
    out["grads"] = grads
    return out


def ddp_worker(model_dir: str, out: str) -> None:
    """One rank: its own prompt, DDP-averaged gradients, one SGD step, for each scoring path; rank 0 saves."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    results = {}
    for shared_prefix in (False, True):
        policy, batch, ids, mask, adv = _setup(model_dir)  # a fresh copy of the initial weights
        model = DistributedDataParallel(policy.model.train())
        rows = list(range(rank * GROUP, (rank + 1) * GROUP))
        mine = batch.select([rank])  # this rank's prompt, unpadded as a batch of one
        _loss(model, mine, ids[rows], mask[rows], adv[rows], shared_prefix=shared_prefix).backward()
        grads = _state(model)["grads"]
        torch.optim.SGD(model.parameters(), lr=LR).step()
        results[shared_prefix] = {**_state(model), "grads": grads}
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


# ---- the trainer ------------------------------------------------------------------------------


class PerPromptRollouts:
    """The ``hf`` engine run prompt by prompt, seeded by the prompt: rollouts independent of the batch split."""

    name = "per_prompt_hf"

    def __init__(self, bundle=None, *, eval_delay: float = 0.0, **options) -> None:
        from syngrpo_hf.engine import HFRolloutEngine

        self.inner = HFRolloutEngine(bundle, **options)
        #: seconds each greedy call (an evaluation: rank 0 alone runs it) sleeps first, a slow eval set
        self.eval_delay = float(eval_delay)

    def generate(self, bundle, batch, *, num_generations, temperature, top_p, max_new_tokens, generator_seed=None):
        import zlib

        import torch

        from syngrpo.models.rollout import Rollout

        if temperature == 0.0 and self.eval_delay:
            time.sleep(self.eval_delay)
        prompts = batch.collapse()
        parts = []
        for i in range(prompts.num_rows):
            one = prompts.select([i])
            seed = zlib.crc32((one.prompts[0] + repr(one.image_grid_thw.tolist())).encode())
            parts.append(self.inner.generate(bundle, one, num_generations=num_generations, temperature=temperature,
                                             top_p=top_p, max_new_tokens=max_new_tokens, generator_seed=seed))
        T = max(p.completion_ids.shape[1] for p in parts)
        pad = bundle.pad_token_id

        def padded(t, value):
            return torch.nn.functional.pad(t, (0, T - t.shape[1]), value=value)

        G = int(num_generations)
        return Rollout(
            completion_ids=torch.cat([padded(p.completion_ids, pad) for p in parts]),
            completion_mask=torch.cat([padded(p.completion_mask, 0) for p in parts]),
            texts=[t for p in parts for t in p.texts],
            prompt_index=torch.arange(prompts.num_rows).repeat_interleave(G),
            batch=prompts.expand(G),
            group_size=G,
            truncated=torch.cat([p.truncated for p in parts]),
        )

    def sync_weights(self, model) -> None:
        """Samples from the policy itself."""

    def close(self) -> None:
        """Nothing to release."""


class LengthReward:
    def __call__(self, responses, samples, *, task, frames=None):
        return [min(1.0, len(r.text) / 60.0) for r in responses]


class SlowMainTracker:
    """An experiment tracker (trackers run on rank 0 only) slow to start and to log step 1: a W&B login or
    upload over a bad network, while the other ranks have nothing to do but wait."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)

    def start(self, **kwargs) -> None:
        time.sleep(self.seconds)

    def log_metrics(self, step, metrics) -> None:
        if step == 1:
            time.sleep(self.seconds)

    def log_table(self, name, columns, rows, step) -> None:
        """Nothing to show."""

    def log_images(self, name, images, step) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to release."""


class DistributedTestPlugins:
    @hookimpl
    def register_rollout_engines(self, register):
        register("per_prompt_hf", lambda bundle=None, **options: PerPromptRollouts(bundle, **options),
                 description="hf, one prompt at a time, seeded by the prompt (distributed test)")

    @hookimpl
    def register_trackers(self, register):
        register("slow_main", lambda **options: SlowMainTracker(**options),
                 description="sleeps on rank 0 at start and at step 1 (distributed test)")

    @hookimpl
    def register_rewards(self, register):
        register("length_60", lambda **options: LengthReward(), description="completion length (distributed test)")


def _trainer_config(model_dir: str, *extra: str):
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    sets = [f"model.policy={model_dir}", "model.device=cpu", "model.dtype=float32", "data.toy.n_train=8",
            "data.toy.n_eval=2", "data.toy.image_size=56", "rollout.engine=per_prompt_hf",
            "rollout.num_generations=3", "rollout.max_new_tokens=16", "rollout.response_format=plain",
            'rewards.terms=[{"name": "length_60"}]', "synthesis.mode=off", "optim.batch_size=4",
            "optim.max_steps=1", "optim.lr=1e-3", "optim.adam_eps=1.0", "optim.max_grad_norm=1.0",
            "sft.enabled=false", "eval.at_end=false", "logging.progress=false", "logging.tensorboard=false",
            "logging.plots=false", "logging.gallery=false", "logging.samples_every=0", "parallel.timeout=120",
            *extra]
    return load_config(TrainConfig, None, sets)


def trainer_step(model_dir: str, run_dir: str, *extra: str, steps: int = 1) -> dict:
    """``steps`` Trainer steps on 4-prompt global batches (this process's share of each under torchrun).

    ``extra`` are more ``--set`` overrides (the FSDP test: the strategy, gradient accumulation, KL).
    """
    import torch

    from syngrpo.scale.memory import state_bytes
    from syngrpo.testing import registry_with
    from syngrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = _trainer_config(model_dir, *extra)
    registry = registry_with(DistributedTestPlugins(), autoload=True)
    with Trainer(cfg, run_dir, registry=registry) as trainer:
        trainer.setup()

        def full(p):  # FSDP parameters are shards (DTensors): the full tensor, a collective on every rank
            return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()

        lora_a_init = {n: full(p) for n, p in trainer.bundle.base_model.named_parameters() if "lora_A" in n}
        for step in range(1, steps + 1):
            metrics = trainer.train_step(step)
        nbytes = state_bytes(trainer.bundle.model, trainer.optimizer)  # this rank's, before any gathering
        params = {n: full(p) for n, p in trainer.bundle.base_model.named_parameters()}
        return {"params": params, "lora_a_init": lora_a_init, "rank": trainer.par.rank, "world": trainer.par.world,
                "strategy": trainer.par.strategy, "bytes": nbytes,
                "reward": metrics["reward/total"], "grad_norm": metrics["grad_norm"]}


def _max_rel(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for name in a:
        scale = float(a[name].abs().max().clamp(min=1e-12))
        rel = float((a[name] - b[name]).abs().max()) / scale
        if rel > worst:
            worst, where = rel, name
    return worst, where


def _initial_params(model_dir: Path) -> dict:
    from syngrpo.models.policy import load_policy

    return {n: p.detach().clone() for n, p in load_policy(model_dir).model.named_parameters()}


def _torchrun(*args: str, nproc: int = 2) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    script = [] if args[:1] == ("-m",) else [__file__]  # this file as the worker, or ``-m module ...``
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", *script, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                              timeout=300, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 300 s: {exc}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from syngrpo.models.tiny_policy import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("tiny-policy"), seed=0)


@pytest.fixture(scope="module")
def ddp_results(model_dir, tmp_path_factory) -> dict:
    """Both scoring paths' DDP steps, from one ``torchrun --standalone --nproc_per_node=2`` run."""
    import torch

    out = tmp_path_factory.mktemp("ddp") / "ddp.pt"
    _torchrun("--model", str(model_dir), "--out", str(out))
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("shared_prefix", [False, True], ids=["naive", "shared-prefix"])
def test_two_rank_ddp_step_equals_the_single_process_step_on_the_same_global_batch(model_dir, ddp_results,
                                                                                   shared_prefix):
    import torch

    ddp = ddp_results[shared_prefix]
    torch.set_num_threads(1)
    ref = single_process_step(str(model_dir), shared_prefix=shared_prefix)
    assert ddp["grads"].keys() == ref["grads"].keys() and any("visual" in n for n in ref["grads"])
    rel, where = _max_rel(ref["grads"], ddp["grads"])
    assert rel <= 1e-5, (rel, where)
    # the step moved the parameters, and both processes moved them the same way
    moved = max(float((ref["params"][n] - p0).abs().max()) for n, p0 in _initial_params(model_dir).items())
    assert moved > 1e-4
    for name, p in ref["params"].items():
        assert torch.allclose(p, ddp["params"][name], rtol=1e-5, atol=1e-6), name


@pytest.mark.slow
def test_two_rank_trainer_step_equals_the_single_process_trainer_step(model_dir, tmp_path):
    import torch

    out = tmp_path / "ddp-trainer.pt"
    _torchrun("--trainer", "--model", str(model_dir), "--workdir", str(tmp_path / "ddp-run"), "--out", str(out))
    ddp = torch.load(out)
    single = trainer_step(str(model_dir), str(tmp_path / "single-run"))
    assert (ddp["world"], single["world"]) == (2, 1)
    assert 0 < single["reward"] < 1 and single["grad_norm"] > 0  # rewards spread, so the step is not a no-op
    assert abs(ddp["reward"] - single["reward"]) < 1e-6  # the same completions, split over two ranks
    initial = _initial_params(model_dir)
    # compare the updates, not the parameters: an update is ~1e-5 of a parameter's size
    moved = max(float((single["params"][n] - p0).abs().max()) for n, p0 in initial.items())
    assert moved > 1e-6
    gap = max(float((single["params"][n] - ddp["params"][n]).abs().max()) for n in initial)
    assert gap <= 1e-3 * moved, (gap, moved)


#: the FSDP step: sharded policy and reference, KL term, shared-prefix scoring, two micro-batches per rank
FSDP_SETS = ("algorithm.beta=0.04", "algorithm.shared_prefix=true", "optim.grad_accum=2")


@pytest.mark.slow
def test_two_rank_fsdp_step_equals_the_single_process_step_with_half_the_state_per_rank(model_dir, tmp_path):
    """FSDP2 on two ranks: the single-process step, with params + grads + AdamW state split in half.

    The per-rank byte counts go to ``state_bytes.json`` (compare with ``syngrpo plan``: fp32 masters
    4 B/param, fp32 gradients 4 B/param, AdamW 8 B/param, rows split ceil-wise over the ranks).
    """
    import json

    import torch

    out = tmp_path / "fsdp-trainer.pt"
    sets = [f"--set={s}" for s in (*FSDP_SETS, "parallel.strategy=fsdp")]
    _torchrun("--trainer", "--model", str(model_dir), "--workdir", str(tmp_path / "fsdp-run"), "--out", str(out),
              *sets)
    fsdp = torch.load(out)
    fsdp_rank1 = torch.load(str(out) + ".rank1")
    single = trainer_step(str(model_dir), str(tmp_path / "single-run"), *FSDP_SETS)
    assert (fsdp["world"], fsdp["strategy"], single["world"], single["strategy"]) == (2, "fsdp", 1, "single")
    assert abs(fsdp["reward"] - single["reward"]) < 1e-6 and single["grad_norm"] > 0
    assert abs(fsdp["grad_norm"] - single["grad_norm"]) <= 1e-4 * single["grad_norm"]
    initial = _initial_params(model_dir)
    moved = max(float((single["params"][n] - p0).abs().max()) for n, p0 in initial.items())
    assert moved > 1e-6
    gap = max(float((single["params"][n] - fsdp["params"][n]).abs().max()) for n in initial)
    assert gap <= 1e-3 * moved, (gap, moved)
    report = {"single": single["bytes"], "fsdp_rank0": fsdp["bytes"], "fsdp_rank1": fsdp_rank1["bytes"],
              "params": sum(p.numel() for p in initial.values())}
    (tmp_path / "state_bytes.json").write_text(json.dumps(report, indent=1))
    print("state bytes:", json.dumps(report))
    for rank in ("fsdp_rank0", "fsdp_rank1"):
        per_rank = sum(report[rank].values())
        assert per_rank <= 0.55 * sum(report["single"].values()), (rank, report)
        assert report[rank]["params"] <= 0.55 * report["single"]["params"], (rank, report)


#: LoRA under FSDP: rank-4 adapters without dropout (each rank would draw its own mask), the KL term against the
#: base (the reference carries no adapters), shared-prefix scoring, two micro-batches per rank, two steps (the
#: first moves only B, which starts at zero; the second moves A too)
LORA_SETS = ("model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.0", "optim.lr=0.05", *FSDP_SETS)


@pytest.mark.slow
def test_two_rank_fsdp_lora_steps_equal_the_single_process_lora_steps(model_dir, tmp_path):
    """LoRA adapters sharded with the policy (issue 27 item 1): two steps on two ranks = two in one process.

    Before, ``parallel.strategy: fsdp`` with ``model.lora.enabled`` was refused by the preflight checks.
    """
    pytest.importorskip("peft")
    import torch

    out = tmp_path / "fsdp-lora.pt"
    sets = [f"--set={s}" for s in (*LORA_SETS, "parallel.strategy=fsdp")]
    _torchrun("--trainer", "--steps", "2", "--model", str(model_dir), "--workdir", str(tmp_path / "fsdp-run"),
              "--out", str(out), *sets)
    fsdp = torch.load(out)
    single = trainer_step(str(model_dir), str(tmp_path / "single-run"), *LORA_SETS, steps=2)
    assert (fsdp["world"], fsdp["strategy"], single["world"], single["strategy"]) == (2, "fsdp", 1, "single")
    assert fsdp["params"].keys() == single["params"].keys()
    adapters = [n for n in single["params"] if "lora_" in n]
    assert adapters and all("language_model" in n for n in adapters)
    initial = _initial_params(model_dir)
    for name, p in single["params"].items():  # the base is frozen in both
        if name not in adapters:
            base = name.replace(".base_layer", "")
            assert torch.equal(p.float(), initial[base].float()) and torch.equal(fsdp["params"][name].float(),
                                                                                 p.float()), name
    moved_a = max(float((single["params"][n] - p).abs().max()) for n, p in _lora_init(single).items())
    assert moved_a > 1e-6  # the second step moved A, not only B
    rel, where = _max_rel({n: single["params"][n] for n in adapters}, fsdp["params"])
    print(f"LoRA adapters after 2 steps, 2 FSDP ranks vs 1 process: max relative difference {rel:.2e} ({where}); "
          f"A moved by up to {moved_a:.2e}; grad norms {fsdp['grad_norm']:.6g} vs {single['grad_norm']:.6g}")
    assert abs(fsdp["reward"] - single["reward"]) < 1e-6 and single["grad_norm"] > 0
    assert abs(fsdp["grad_norm"] - single["grad_norm"]) <= 1e-4 * single["grad_norm"]
    assert rel <= 1e-4, (rel, where)
    # A's update is ~1e-4 of A itself: compare the updates, not the weights
    gap_a = max(float((single["params"][n] - fsdp["params"][n]).abs().max()) for n in _lora_init(single))
    print(f"A: largest update {moved_a:.2e}, largest gap between the runs {gap_a:.2e}")
    assert gap_a <= 1e-3 * moved_a, (gap_a, moved_a)


def _lora_init(result: dict) -> dict:
    """The A matrices as LoRA initialised them (the trainer's seed): what the second step moved."""
    return result["lora_a_init"]


@pytest.mark.slow
def test_torchrun_fsdp_train_command_finishes_evaluates_and_resumes(model_dir, tmp_path):
    """``torchrun --nproc_per_node=2 -m syngrpo.cli train --set parallel.strategy=fsdp`` in bf16 with gradient
    checkpointing and accumulation; its checkpoint (gathered on rank 0) evaluates in one process and resumes."""
    from syngrpo.cli import main
    from syngrpo.rundir.checkpoint import latest_checkpoint
    from syngrpo.rundir.runlog import read_jsonl

    run = tmp_path / "run"
    sets = [f"model.policy={model_dir}", "model.device=cpu", "model.dtype=bfloat16", "parallel.strategy=fsdp",
            "parallel.timeout=120", "model.gradient_checkpointing=true", "optim.grad_accum=2", "optim.batch_size=4",
            "optim.max_steps=2", "logging.save_every=1", "data.toy.n_train=8", "data.toy.n_eval=2",
            "data.toy.image_size=56", "rollout.num_generations=3", "rollout.max_new_tokens=16",
            "synthesis.mode=off", "sft.enabled=false", "eval.at_start=false", "eval.batch_size=2",
            "logging.progress=false", "logging.tensorboard=false", "logging.plots=false"]
    argv = [a for s in sets for a in ("--set", s)]
    _torchrun("-m", "syngrpo.cli", "train", "--out", str(run), *argv)
    assert "sharded (FSDP) over 2 process(es)" in (run / "train.log").read_text()
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
    _torchrun("-m", "syngrpo.cli", "train", "--resume", str(run), "--set", "optim.max_steps=3")
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert latest_checkpoint(run).name == "step-000003"
    assert "resumed from" in (run / "train.log").read_text()


#: rank 0 alone works this long in each slow phase, while the process group gives up on a peer after TIMEOUT
SLOW, TIMEOUT = 14.0, 6.0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_slow_rank0_only_phases_do_not_outlast_the_process_group_timeout(model_dir, tmp_path):
    """Issue 20 item 5: rank-0-only work longer than ``parallel.timeout`` does not abort the run.

    Rank 0 alone starts the trackers, evaluates, logs and writes checkpoints; here a tracker plugin
    takes ``SLOW`` s to start and to log step 1, and the evaluation at the start of the run (greedy,
    rank 0 only) sleeps as long, each longer than the 6 s collective timeout.  The other rank must
    wait for rank 0 without a collective timing out, and both ranks finish both steps.
    """
    out = tmp_path / "slow.json"
    sets = [f"--set={s}" for s in (
        f"parallel.timeout={TIMEOUT}", "optim.max_steps=2", "logging.save_every=1", "eval.at_start=true",
        "logging.trackers=[slow_main]", f'logging.tracker_options={{"slow_main": {{"seconds": {SLOW}}}}}',
        f'rollout.engine_options={{"eval_delay": {SLOW}}}')]
    t0 = time.perf_counter()
    _torchrun("--train", "--model", str(model_dir), "--workdir", str(tmp_path / "run"), "--out", str(out), *sets)
    report = json.loads(out.read_text())
    assert report == {"steps": 2, "world": 2, "timeout": TIMEOUT}
    assert time.perf_counter() - t0 > 3 * SLOW  # the slow phases did run (start, eval at step 0, log of step 1)
    assert (tmp_path / "run" / "checkpoints" / "step-000002").is_dir()


def full_state(trainer) -> dict:
    """The policy's weights and AdamW state, whole and keyed by parameter name (gathered on rank 0 under FSDP).

    Only once the optimizer has state: ``get_state_dict`` initialises an empty one with a zero-lr step.
    """
    import copy

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True) if trainer.par.enabled else None
    model, optim = get_state_dict(trainer.bundle.model, trainer.optimizer, options=options)
    # copies: some entries are the live tensors (AdamW's step counters), which later steps change in place
    return copy.deepcopy({"model": model, "optim": optim.get("state", {}), "step": trainer.step,
                          "world": trainer.par.world})


def _assert_same_state(a: dict, b: dict) -> None:
    import torch

    assert a["model"].keys() == b["model"].keys() and a["optim"].keys() == b["optim"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, st in a["optim"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optim"][name][key])), (name, key)


def train_worker(model_dir: str, run_dir: str, out: str, *extra: str, resume: str | None = None) -> None:
    """``Trainer.train`` on every rank; rank 0 reports the steps it finished, and with ``resume`` the state
    the checkpoint restored (``<out>.restored.pt``) and the state at the end (``<out>.final.pt``)."""
    import torch

    from syngrpo.testing import registry_with
    from syngrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = _trainer_config(model_dir, *extra)
    registry = registry_with(DistributedTestPlugins(), autoload=True)
    with Trainer(cfg, run_dir, resume=resume, registry=registry) as trainer:
        trainer.setup()
        restored = full_state(trainer) if resume else None  # collectives: every rank takes part
        trainer.train()
        final = full_state(trainer)
        if trainer.par.is_main:
            if restored is not None:
                torch.save(restored, out + ".restored.pt")
            torch.save(final, out + ".final.pt")
            Path(out).write_text(json.dumps({"steps": trainer.step, "world": trainer.par.world,
                                             "timeout": trainer.cfg.parallel.timeout}))


#: six prompts a step: a global batch that splits over 1, 2 and 3 ranks
RESHARD_SETS = ("parallel.strategy=fsdp", "optim.batch_size=6", "data.toy.n_train=12", "logging.save_every=2",
                "algorithm.beta=0.04", "optim.grad_accum=1")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sharded_checkpoint_of_two_ranks_resumes_on_three_then_in_one_process_exactly(model_dir, tmp_path):
    """Issue 20 item 4: DCP re-slices a sharded checkpoint for another world size.

    Two FSDP ranks train 2 steps and write ``step-000002`` as two shard files; three ranks resume it (each
    reading the overlap of its new slices), restore exactly the weights and AdamW state the two ranks had,
    train to step 4 and write three shard files; one plain process resumes that and restores exactly
    the three ranks' state.
    """
    import torch

    from syngrpo.rundir.checkpoint import latest_checkpoint
    from syngrpo.rundir.runlog import read_jsonl

    run = tmp_path / "run"
    two = tmp_path / "two.json"
    _torchrun("--train", "--model", str(model_dir), "--workdir", str(run), "--out", str(two),
              *[f"--set={s}" for s in (*RESHARD_SETS, "optim.max_steps=2")])
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step-000002"
    assert sorted(p.name for p in (ckpt / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    saved = torch.load(str(two) + ".final.pt")

    three = tmp_path / "three.json"
    _torchrun("--train", "--model", str(model_dir), "--workdir", str(run), "--out", str(three), "--resume", str(run),
              *[f"--set={s}" for s in (*RESHARD_SETS, "optim.max_steps=4")], nproc=3)
    restored = torch.load(str(three) + ".restored.pt")
    assert (restored["world"], restored["step"]) == (3, 2)
    _assert_same_state(saved, restored)
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step-000004" and len(list((ckpt / "sharded").glob("*.distcp"))) == 3

    one = tmp_path / "one.json"
    train_worker(str(model_dir), str(run), str(one), *(s for s in RESHARD_SETS if "strategy" not in s),
                 "optim.max_steps=5", resume=str(run))
    restored = torch.load(str(one) + ".restored.pt")
    assert (restored["world"], restored["step"]) == (1, 4)
    _assert_same_state(torch.load(str(three) + ".final.pt"), restored)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert json.loads(one.read_text())["steps"] == 5


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("layout", ["sharded", "full"])
def test_an_fsdp_lora_checkpoint_resumes_on_two_ranks_exactly(model_dir, tmp_path, layout):
    """LoRA under FSDP (issue 27 item 1): a checkpoint written sharded (DCP, peft names) or gathered on rank 0
    (the adapters only, ``adapter_model.safetensors``) restores the adapters, the frozen base and AdamW's
    state exactly as the two ranks had them, in bf16 (fp32 adapters on a bf16 base)."""
    pytest.importorskip("peft")
    import torch

    from syngrpo.rundir.checkpoint import latest_checkpoint

    sets = (*RESHARD_SETS, "model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.0",
            "model.dtype=bfloat16", f"parallel.checkpoint={layout}")
    run, first = tmp_path / "run", tmp_path / "first.json"
    _torchrun("--train", "--model", str(model_dir), "--workdir", str(run), "--out", str(first),
              *(f"--set={s}" for s in (*sets, "optim.max_steps=2")))
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step-000002"
    if layout == "sharded":
        assert len(list((ckpt / "sharded").glob("*.distcp"))) == 2
    else:
        assert (ckpt / "model" / "adapter_model.safetensors").is_file()
    again = tmp_path / "again.json"
    _torchrun("--train", "--resume", str(run), "--model", str(model_dir), "--workdir", str(run), "--out", str(again),
              *(f"--set={s}" for s in (*sets, "optim.max_steps=3")))
    restored = torch.load(str(again) + ".restored.pt")
    assert (restored["world"], restored["step"]) == (2, 2)
    before = torch.load(str(first) + ".final.pt")
    assert any("lora_A" in n for n in before["optim"]) and not any("base_layer" in n for n in before["optim"])
    _assert_same_state(before, restored)
    assert json.loads(again.read_text())["steps"] == 3
    final = torch.load(str(again) + ".final.pt")["model"]
    last = latest_checkpoint(run)
    assert last.name == "step-000003"
    if layout == "sharded":  # eval and export read its model/ as a plain model: W + (alpha / r) B @ A, peft's merge
        from syngrpo.models.policy import load_policy

        served = dict(load_policy(str(last / "model"), dtype="bfloat16").model.named_parameters())
        layer = next(n.rsplit(".lora_A", 1)[0] for n in final if ".lora_A." in n)
        delta = final[f"{layer}.lora_B.default.weight"].float() @ final[f"{layer}.lora_A.default.weight"].float()
        base = final[f"{layer}.base_layer.weight"]
        want = (base.float() + delta * (32 / 4)).to(base.dtype)
        plain = layer.removeprefix("base_model.model.") + ".weight"
        assert delta.abs().max() > 0 and torch.equal(served[plain], want), plain
    # and one plain process resumes the FSDP checkpoint exactly (LoRA replicated, not sharded)
    one = tmp_path / "one.json"
    train_worker(str(model_dir), str(run), str(one), *(s for s in sets if "strategy" not in s),
                 "optim.max_steps=4", resume=str(run))
    single = torch.load(str(one) + ".restored.pt")
    assert (single["world"], single["step"]) == (1, 3)
    _assert_same_state(torch.load(str(again) + ".final.pt"), single)


def trainer_worker(model_dir: str, run_dir: str, out: str, *extra: str, steps: int = 1) -> None:
    import torch

    result = trainer_step(model_dir, run_dir, *extra, steps=steps)
    if result["rank"] == 0:
        torch.save(result, out)
    else:  # rank 1 reports its own state bytes
        torch.save({"bytes": result["bytes"]}, out + ".rank1")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one DDP step (scoring + loss path, or the trainer), run by torchrun")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trainer", action="store_true")
    ap.add_argument("--train", action="store_true", help="Trainer.train() instead of one step")
    ap.add_argument("--resume")
    ap.add_argument("--workdir")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args()
    if args.train:
        train_worker(args.model, args.workdir, args.out, *args.sets, resume=args.resume)
    elif args.trainer:
        trainer_worker(args.model, args.workdir, args.out, *args.sets, steps=args.steps)
    else:
        ddp_worker(args.model, args.out)
