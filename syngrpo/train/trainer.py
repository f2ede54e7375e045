"""The Syn-GRPO trainer: one step read top to bottom, and the orchestration around it.

:meth:`Trainer.train_step` is the whole algorithm of paper §3.3.2 for one batch:

1. draw a batch from the data pool (originals, some replaced by synthesized samples);
2. encode each image with the task's question and the response-format instructions;
3. roll out G responses per prompt;
4. parse them and score them: r_i = R_acc + R_format + R_diversity (eq. 7), where
   R_diversity compares each response's predicted diversity with the group's measured
   diversity V(q) (eq. 4), smoothed across batches (§3.3.2, eq. 6);
5. turn rewards into group advantages (eq. 1, or a registered variant);
6. score the completions under the policy (and the reference model for the KL term)
   and take one optimizer step on the registered policy loss;
7. pick one description per prompt (eq. 8) and send it to the data server without
   waiting (``async``), or wait for the images (``sync``, the Table 5 ablation);
8. fold every synthesized image that came back into the pool.

Everything else (loading, SFT warm start, logging, checkpoints, resume, evaluation,
the data-server link, data parallelism under ``torchrun``) is orchestration in
:class:`Trainer` and the modules it wires: :mod:`syngrpo.data.pool`,
:mod:`syngrpo.synthesis.client`, :mod:`syngrpo.rundir.runlog`, :mod:`syngrpo.rundir.checkpoint`,
:mod:`syngrpo.train.evaluate`, :mod:`syngrpo.scale.parallel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from syngrpo.algo.diversity import DiversitySmoother, diversity_reward, ground_truth_diversity, select_description
from syngrpo.config import TrainConfig, check_runnable
from syngrpo.config.io import dump_config
from syngrpo.data.images import load_rgb
from syngrpo.data.pool import DataPool
from syngrpo.errors import ConfigError
from syngrpo.models.resolve import resolve_policy
from syngrpo.perception.response import parse_response
from syngrpo.perception.rewards import make_reward
from syngrpo.rundir.runlog import RunLog
from syngrpo.scale.memory import PhasePeaks
from syngrpo.scale.parallel import Parallel
from syngrpo.synthesis.client import StepSynthesis, SynthesisClient
from syngrpo.synthesis.connect import connect
from syngrpo.train.data import load_split
from syngrpo.train.evaluate import EvalResult, build_prompts, evaluate_policy, write_report
from syngrpo.types import Sample

log = logging.getLogger(__name__)


def step_seed(run_seed: int, step: int, what: str) -> int:
    """A seed fixed by (run seed, step, purpose): sampling never depends on how the run got to this step."""
    return zlib.crc32(f"{run_seed}/{step}/{what}".encode()) & 0x7FFFFFFF


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps (linear warmup, then the schedule)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


class Trainer:
    """Wires the components a config names and runs Syn-GRPO (see the module docstring).

    ``transport`` replaces the one the config would create (tests pass an
    in-process transport); ``registry`` replaces the installed plugins; ``resume``
    is a run directory or checkpoint to continue from (the run directory then
    stays the same).  Under ``torchrun`` each process is one rank of a
    data-parallel run (:mod:`syngrpo.scale.parallel`).

    Use: ``with Trainer(cfg, run_dir) as t: summary = t.train()``; ``setup()`` and
    ``train_step(step)`` are public for tests and notebooks.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: str | Path | None = None,
                 transport: Any | None = None, registry: Any | None = None) -> None:
        if transport is None:
            check_runnable(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume_from = Path(resume) if resume is not None else None
        self._transport = transport
        self._registry = registry
        self.step = 0
        self.server = None
        self.synthesis: SynthesisClient | None = None
        self.runlog: RunLog | None = None
        self._ready = False
        self._last_eval: EvalResult | None = None
        self._sft_summary = ""
        self.par = Parallel()
        self.precision: Any = None  # syngrpo.scale.precision.Precision, set by setup()
        self._stream_suffix = ""
        self._dcp_resume: Path | None = None  # a sharded checkpoint every rank reads its slices of (setup)
        self._sharded_checkpoints = False  # set by setup (parallel.checkpoint)

    # =====================================================================================
    # one training step
    # =====================================================================================
    def train_step(self, step: int) -> dict[str, Any]:
        """One Syn-GRPO step (paper §3.3.2); returns its metrics."""
        import torch

        from syngrpo.algo import grpo
        from syngrpo.models.policy import encode_prompts
        from syngrpo.models.scoring import completion_logprobs

        cfg, task, bundle = self.cfg, self.task, self.bundle
        t_start = time.perf_counter()
        syn_mode = self.response_mode == "syn"

        # 1. a batch of prompts from the data pool (some samples may already be synthesized);
        #    under torchrun every rank draws the same global batch and keeps its own slice
        samples = self.par.my_slice(self.pool.draw(cfg.optim.batch_size))
        epoch = self.pool.epoch
        B = len(samples)

        # 2. image + question + response-format instructions -> model inputs
        prompts = encode_prompts(bundle, [load_rgb(s.image) for s in samples],
                                 build_prompts(task, samples, self.response_mode))

        # 3. G responses per prompt (prompt-major rows: p0 x G, p1 x G, ...); MC-GRPO asks for one more
        G = cfg.rollout.num_generations + self.estimator.extra_rollouts
        peaks = PhasePeaks(bundle.device)  # per-phase CUDA peaks: what `syngrpo plan` predicts, measured
        t0 = time.perf_counter()
        with self.sampling():  # the bf16 compute weights of a mixed-precision or sharded run
            rollout = self.engine.generate(bundle, prompts, num_generations=G, temperature=cfg.rollout.temperature,
                                           top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
                                           generator_seed=step_seed(cfg.seed, step, f"rollout{self._stream_suffix}"))
        t_rollout = time.perf_counter() - t0
        peaks.end("rollout")
        parsed = [parse_response(text, self.response_mode) for text in rollout.texts]
        row_samples = [samples[int(i)] for i in rollout.prompt_index]
        row_frames = list(rollout.batch.frames)

        # 4. rewards: the registered terms (R_acc, R_format, ...) then R_diversity (eqs. 4-7)
        parts: dict[str, list[float]] = {}
        raw: dict[str, list[float]] = {}
        for term, fn in self.reward_fns:
            raw[term.key] = [float(v) for v in fn(parsed, row_samples, task=task, frames=row_frames)]
            parts[term.key] = [term.weight * v for v in raw[term.key]]
        # V(q) is the spread of R_acc (eq. 4), needed even when accuracy is not a reward term
        acc = raw["accuracy"] if "accuracy" in raw else self.accuracy_fn(parsed, row_samples, task=task,
                                                                          frames=row_frames)
        acc_groups = [acc[b * G:(b + 1) * G] for b in range(B)]
        v_raw = [ground_truth_diversity(g) for g in acc_groups]  # V(q), eq. 4 (normalised)
        div_groups: list[list[float]] = [[0.0] * G for _ in range(B)]
        div_unsmoothed: list[float] = []
        v_smooth: list[float] = list(v_raw)
        if syn_mode:
            # Ṽ(q), diversity smoothing over the global batch (every rank's groups)
            v_global = [v for part in self.par.gather(v_raw) for v in part]
            v_smooth = self.par.my_slice(self.smoother.update(v_global))
            for b in range(B):
                scores = [parsed[b * G + i].score for i in range(G)]
                div_groups[b] = [diversity_reward(s, v_smooth[b]) for s in scores]  # eq. 6
                div_unsmoothed += [diversity_reward(s, v_raw[b]) for s in scores]  # eq. 5, for Fig. 7
            parts["diversity"] = [cfg.rewards.diversity_weight * r for g in div_groups for r in g]
        totals = [sum(p[n] for p in parts.values()) for n in range(B * G)]
        rewards = torch.tensor(totals, dtype=torch.float32).view(B, G)  # (B, G)

        # 5. group advantages (eq. 1 or a registered variant) and the rollouts that take part
        advantages = self.estimator(rewards).reshape(-1)  # (N,)
        keep = self.estimator.keep_mask(rewards).reshape(-1)  # (N,) bool
        completion_ids = rollout.completion_ids
        completion_mask = rollout.completion_mask
        loss_mask = completion_mask * keep.to(completion_mask.device, completion_mask.dtype).unsqueeze(1)

        # 6. policy update: log-probs under the policy (and old policy / reference), loss, backward, step
        t0 = time.perf_counter()
        model = self.train_model  # the policy; under torchrun wrapped in DDP or sharded by FSDP (parallel.py)
        model.train()
        chunks = [c for c in _split(list(range(B)), cfg.optim.grad_accum) if c]
        total_rows, total_tokens = B * G, float(loss_mask.sum().clamp(min=1))

        def rows_of(prompt_ids: list[int]) -> list[int]:
            return [p * G + j for p in prompt_ids for j in range(G)]

        def score(m: Any, prompt_ids: list[int], *, entropy: bool) -> tuple[Any, Any, Any, Any]:
            rows = rows_of(prompt_ids)
            cmask = completion_mask[rows]
            T = max(1, int(cmask.sum(-1).max()))  # trim the padding every row of this chunk has
            ids, cmask = completion_ids[rows][:, :T], cmask[:, :T]
            with self.precision.autocast():  # bf16 compute on float32 masters (precision.py)
                logp, ent = completion_logprobs(m, rollout.batch.select_prompts(prompt_ids), ids, cmask, group_size=G,
                                                shared_prefix=self.shared_prefix, with_entropy=entropy,
                                                temperature=cfg.rollout.temperature)
            return logp, ent, rows, T

        old_logps: list[Any] = [None] * len(chunks)
        ref_logps: list[Any] = [None] * len(chunks)
        with torch.no_grad():
            for c, prompt_ids in enumerate(chunks):
                if cfg.algorithm.updates_per_batch > 1:
                    old_logps[c] = score(bundle.model, prompt_ids, entropy=False)[0]
                if self.ref_model is not None:
                    ref_logps[c] = score(self.ref_model, prompt_ids, entropy=False)[0]

        stats_sum: dict[str, float] = {}
        entropy_sum, grad_norm, engine_gap = 0.0, 0.0, None
        for update in range(cfg.algorithm.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            entropy_sum = 0.0
            for c, prompt_ids in enumerate(chunks):
                # under torchrun the gradients are averaged over ranks once, with the last micro-batch
                with self.par.grad_sync(model, c == len(chunks) - 1):
                    logp, ent, rows, T = score(model, prompt_ids, entropy=True)
                    if not self.policy_loss.entropy_needs_grad:
                        ent = ent.detach()  # frees the entropy's graph now
                    mask = loss_mask[rows][:, :T]
                    loss, stats = self.policy_loss(
                        logp=logp, old_logp=old_logps[c], ref_logp=ref_logps[c],
                        advantages=advantages[rows].to(logp.device), mask=mask, entropy=ent,
                    )
                    # micro-batches weighted so that their sum is the loss of the whole batch
                    weight = (float(mask.sum()) / total_tokens if cfg.algorithm.aggregation == "token_mean"
                              else len(rows) / total_rows)
                    self.precision.backward(loss * weight)
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + weight * float(v)
                # H(q) of §3.2: per-response mean token entropy, averaged over the batch
                entropy_sum += float(grpo.aggregate(ent.detach(), completion_mask[rows][:, :T], "sequence_mean")) \
                    * len(rows) / total_rows
                if update == 0 and rollout.logprobs is not None:
                    # the sampler's log-probs vs the ones the loss uses (the multimodal-position check)
                    gap = float(((logp.detach() - rollout.logprobs[rows][:, :T].to(logp.device)).abs()
                                 * completion_mask[rows][:, :T].to(logp.device)).max())
                    engine_gap = gap if engine_gap is None else max(engine_gap, gap)
            grad_norm = self.precision.clip_and_step(self.optimizer, self.trainable, cfg.optim.max_grad_norm)
        self.scheduler.step()
        self.engine.sync_weights(bundle.model)
        t_update = time.perf_counter() - t0
        peaks.end("update")
        stats_avg = {k: v / cfg.algorithm.updates_per_batch for k, v in stats_sum.items()}

        # 7. description selection (eq. 8) and synthesis requests (never blocking in async mode)
        report = StepSynthesis()
        chosen_idx: list[int | None] = [None] * B
        if cfg.synthesis.enabled:
            pick_rng = random.Random(step_seed(cfg.seed, step, f"describe{self._stream_suffix}"))
            chosen: list[tuple[Sample, str]] = []
            for b in range(B):
                descriptions = [parsed[b * G + i].description for i in range(G)]
                if cfg.synthesis.description_selection == "random":
                    scores = [0.0] * G  # every usable description ties: a uniform draw among them
                else:
                    scores = div_groups[b]
                i_star = select_description(descriptions, scores, rng=pick_rng
                                            if cfg.synthesis.description_selection == "random" else None)
                chosen_idx[b] = i_star
                if i_star is not None:
                    chosen.append((samples[b], descriptions[i_star].strip()))
            chosen = [c for part in self.par.gather(chosen) for c in part]  # the global batch's choices
            if self.synthesis is not None:  # rank 0 alone talks to the data server
                keys = self.synthesis.submit(step, epoch, chosen, report)
                # 8. synthesized samples that came back replace their sources in the pool
                if cfg.synthesis.mode == "sync":
                    self.synthesis.wait(keys, report)
                else:
                    self.synthesis.collect(report)
                for err in report.errors[:3]:
                    log.debug("synthesis: %s", err)
            if self.par.enabled:  # every rank's pool takes the same new samples (images sent as bytes)
                arrived = self.par.broadcast([(r.job.origin_id, r.job.base_generation) for r in report.replacements])
                records = self._broadcast_samples([r.sample.to_dict() for r in report.replacements])
                if not self.par.is_main:
                    for (origin_id, base_generation), sample in zip(arrived, records, strict=True):
                        self.pool.replace(origin_id, Sample.from_dict(sample), base_generation=base_generation)

        # ---- metrics of the step (what the paper plots, and what an operator needs) ----
        lengths = completion_mask.sum(-1).float()
        n = B * G
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "progress": self.pool.progress,
            "lr": self.scheduler.get_last_lr()[0],
            "reward/total": sum(totals) / n,
            **{f"reward/{name}": sum(vals) / n for name, vals in parts.items()},
            "accuracy": sum(acc) / n,
            "diversity/v_mean": sum(v_raw) / B,
            # groups whose R_acc has no spread (V(q) = 0: the collapse Syn-GRPO attacks); the total's
            # spread is kept apart, since R_diversity differs per rollout by construction
            "diversity/zero_variance_groups": sum(1 for g in acc_groups if max(g) == min(g)) / B,
            "reward/zero_variance_groups_total": float((rewards.std(dim=1) == 0).float().mean()),
            "entropy": entropy_sum,
            "loss": stats_avg.get("loss", float("nan")),
            "policy_loss": stats_avg.get("policy_loss", float("nan")),
            "kl": stats_avg.get("kl", 0.0),
            "clip_frac": stats_avg.get("clip_frac", 0.0),
            "grad_norm": grad_norm,
            "completion/mean_length": float(lengths.mean()),
            "completion/max_length": float(lengths.max()),
            "completion/truncated_frac": float(rollout.truncated.float().mean()) if rollout.truncated is not None else 0.0,
            "batch/synthesized_frac": sum(1 for s in samples if s.generation > 0) / B,
            "time/rollout": t_rollout,
            "time/update": t_update,
        }
        metrics.update(peaks.metrics)
        if engine_gap is not None:
            metrics["logprob/engine_max_abs_diff"] = engine_gap
        for k in ("entropy_bonus", "entropy_advantage"):
            if k in stats_avg:
                metrics[k] = stats_avg[k]
        if syn_mode:
            scores_present = [p.score for p in parsed if p.score is not None]
            metrics.update({
                "diversity/smoothed_mean": sum(v_smooth) / B,
                "diversity/global_avg": self.smoother.global_avg,
                "diversity/predicted_mean": sum(scores_present) / len(scores_present) if scores_present else None,
                "reward/diversity_raw": sum(r for g in div_groups for r in g) / n,
                "reward/diversity_unsmoothed": sum(div_unsmoothed) / n,
            })
        if cfg.synthesis.enabled:
            c = self.pool.counters
            metrics.update({
                "synthesis/submitted": report.submitted,
                "synthesis/done": report.done,
                "synthesis/failed": report.failed,
                "synthesis/stale": report.stale,
                "synthesis/expired": report.expired,
                "synthesis/skipped_busy": report.skipped_busy,
                "synthesis/skipped_server_down": report.skipped_down,
                "synthesis/in_flight": len(self.pool.in_flight),
                "synthesis/submitted_total": c.submitted,
                "synthesis/done_total": c.done,
                "synthesis/failed_total": c.failed + c.expired,
                "synthesis/server_healthy": 1.0 if self.synthesis is None or self.synthesis.healthy else 0.0,
                "synthesis/server_restarts": self.synthesis.server_restarts if self.synthesis is not None else 0,
                "synthesis/wait_seconds": report.wait_seconds,
                "pool/synthesized_fraction": self.pool.synthesized_fraction(),
            })
        metrics["time/step"] = time.perf_counter() - t_start
        # under torchrun: means over ranks; the data server's and the pool's numbers are rank 0's
        metrics = self.par.mean_metrics(metrics, main_only=("synthesis/", "pool/", "epoch", "progress", "lr"))

        # ---- records for samples.jsonl and the gallery ----
        self._step_samples = []
        for b in range(min(B, cfg.logging.samples_per_step)):
            self._step_samples.append({
                "sample_id": samples[b].id,
                "image": samples[b].image,
                "generation": samples[b].generation,
                "problem": samples[b].problem,
                "v": v_raw[b],
                "v_smoothed": v_smooth[b],
                "selected": chosen_idx[b],
                "completions": [
                    {"text": rollout.texts[b * G + i], "score": parsed[b * G + i].score,
                     "reward": totals[b * G + i], "advantage": float(advantages[b * G + i]),
                     **{name: vals[b * G + i] for name, vals in parts.items()}}
                    for i in range(G)
                ],
            })
        self._step_replacements = report.replacements
        return metrics

    # =====================================================================================
    # orchestration
    # =====================================================================================
    @property
    def registry(self) -> Any:
        if self._registry is None:
            from syngrpo.plugins import get_registry, load_local_plugins

            local = load_local_plugins(self.cfg.plugins)  # the config's own plugin modules / files
            self._registry = get_registry(local) if local else get_registry()
        return self._registry

    @property
    def response_mode(self) -> str:
        return self.cfg.response_mode

    def setup(self) -> None:
        """Load data, models and plugins; restore a checkpoint when resuming."""
        import numpy as np
        import torch

        from syngrpo.models.policy import frozen, load_policy, reference_model
        from syngrpo.rundir.checkpoint import (
            DCP_METADATA,
            SHARDED_DIR,
            consolidated_model_state,
            consolidated_optimizer_state,
            is_sharded,
            latest_checkpoint,
            load_sharded,
            load_state,
            model_dir,
            restore_rng_state,
        )
        from syngrpo.scale.precision import Precision

        cfg = self.cfg
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        torch.manual_seed(cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # torchrun: this process's rank; else a single process (parallel.strategy fsdp: a one-rank group)
        self.par = Parallel.from_env(cfg.parallel.strategy, reshard_after_forward=cfg.parallel.reshard_after_forward,
                                     timeout=cfg.parallel.timeout, main_wait=cfg.parallel.main_wait)
        if self.par.enabled:  # rank 0's config is the run's: a node resuming a run need not hold its config.yaml
            self.cfg = cfg = self.par.broadcast(cfg)
            self.par.use_strategy(cfg.parallel.strategy, reshard_after_forward=cfg.parallel.reshard_after_forward)
        self._stream_suffix = f"/{self.par.rank}" if self.par.enabled else ""
        if cfg.hardware is not None and self.par.is_main and (note := cfg.hardware.mismatch(self.par.world)):
            log.warning(note)  # the section describes the target machine; nothing else here reads it
        if self.par.enabled and cfg.optim.batch_size % self.par.world:
            raise ConfigError(f"optim.batch_size ({cfg.optim.batch_size}) must be a multiple of the number of "
                              f"processes ({self.par.world})")
        self.precision = Precision.for_model(cfg.model.dtype, self.par.device(cfg.model.device),
                                             sharded=self.par.sharded)
        if self.par.sharded and (cfg.model.lora.enabled or self.precision.compute == torch.float16):
            raise ConfigError("parallel.strategy fsdp supports full fine-tuning in float32 or bfloat16; "
                              "turn model.lora off or use model.dtype: bfloat16 (or parallel.strategy: ddp)")

        # --- pre-flight (`syngrpo check`): config, plugin names and options, dataset images and boxes,
        # before the checkpoint, the model or the SFT warm start cost anything
        from syngrpo.train.preflight import check_config

        preflight = check_config(cfg, self.registry)
        preflight.raise_for_errors()

        # trackers first: a missing extra (wandb, mlflow) is an error before any model loads
        from syngrpo.rundir.trackers import build_trackers

        self._trackers = (build_trackers(self.registry, cfg.logging.trackers, cfg.logging.tracker_options)
                          if self.par.is_main else None)

        # only rank 0 reads the checkpoint; the other ranks receive what they need from it by broadcast
        ckpt = None
        if self.resume_from is not None:
            if self.par.is_main:
                ckpt = latest_checkpoint(self.resume_from)  # checks every candidate's files: rank 0 alone
            self.par.wait_for_main()
            if not self.par.broadcast(ckpt is not None):
                raise ConfigError(f"--resume {str(self.resume_from)!r}: no checkpoint found there")
        resuming = self.resume_from is not None
        # FSDP and a sharded checkpoint that every rank sees (one filesystem): each rank reads its own slices
        # of it (on any number of ranks); otherwise rank 0 reads it whole and the others get it by broadcast
        self._dcp_resume = None
        if resuming and self.par.sharded and self.par.broadcast(is_sharded(ckpt) if self.par.is_main else None):
            seen = self.par.sees_same_file(ckpt / SHARDED_DIR / DCP_METADATA if self.par.is_main else None)
            self._dcp_resume = seen.parent if seen is not None else None

        # --- task and data ---
        self.task = self.registry.create("tasks", cfg.data.task, **cfg.data.task_options)
        # toy data is drawn by each rank into its own folder (the same images; no two writers of a file)
        toy_sub = f"rank{self.par.rank}" if self.par.enabled and not self.par.is_main else ""
        self.train_samples = preflight.keep(load_split(cfg, self.task, "train", self.run_dir, subdir=toy_sub), "train")
        self.eval_samples = preflight.keep(load_split(cfg, self.task, "eval", self.run_dir, subdir=toy_sub), "eval")

        # --- policy (from the checkpoint when resuming), SFT warm start, reference ---
        policy_path = resolve_policy(cfg.model)
        self.par.wait_for_main()  # a rank that built the tiny policy (the others may have found it built)
        lora = cfg.model.lora.model_dump() if cfg.model.lora.enabled else None
        # float32 masters whatever model.dtype says (LoRA: the adapters); the compute dtype is precision.py's
        load_kwargs = dict(dtype=self.precision.load_dtype(lora=bool(lora)), device=self.par.device(cfg.model.device),
                           attn_implementation=cfg.model.attn_implementation, freeze_vision=cfg.model.freeze_vision,
                           gradient_checkpointing=cfg.model.gradient_checkpointing,
                           max_pixels=cfg.model.max_pixels, min_pixels=cfg.model.min_pixels,
                           family=cfg.model.family)
        sft_dir = self.run_dir / "sft"
        if self.par.sharded:  # FSDP: the policy and the reference go straight into their shards
            self._load_sharded_policy(ckpt, resuming, policy_path, load_kwargs, sft_dir)
        else:
            if ckpt is not None and not lora:
                # a checkpoint an FSDP run wrote sharded: its whole model, read here (one process, or rank 0)
                weights = consolidated_model_state(ckpt) if is_sharded(ckpt) else None
                self.bundle = load_policy(str(model_dir(ckpt)), state_dict=weights, **load_kwargs)
                if weights is not None:  # that directory holds no weights (the vLLM engine loads from here)
                    self.bundle.name_or_path = policy_path
                del weights
            else:  # other ranks of a resumed run: the architecture here, the weights from rank 0 below
                self.bundle = load_policy(policy_path, lora=lora, **load_kwargs)
                if ckpt is not None:  # a LoRA checkpoint holds the adapters only: base weights + saved adapters
                    _load_adapters(self.bundle.model, model_dir(ckpt))
            self.precision.upcast_trainable(self.bundle.model)
            if resuming:
                self.par.wait_for_main()  # rank 0 read the checkpoint's weights alone
                self.par.broadcast_weights(self.bundle.model)
            if not resuming and cfg.sft.enabled:
                if self.par.is_main:
                    self._run_sft(sft_dir)
                self.par.wait_for_main()  # the warm start runs on rank 0 alone, for as long as it takes
                self.par.broadcast_weights(self.bundle.model)  # every rank starts RL from rank 0's warm start
            self.ref_model = None
            if cfg.algorithm.beta > 0:  # the reference lives in the compute dtype (bf16): it is never updated
                if not resuming and cfg.model.reference is None:
                    self.ref_model = reference_model(self.bundle, dtype=self.precision.compute)  # the policy as RL starts
                else:
                    from_run = cfg.model.reference is None and cfg.sft.enabled  # <run dir>/sft: on rank 0's disk only
                    path = cfg.model.reference or (str(sft_dir) if cfg.sft.enabled else policy_path)
                    if from_run and not self.par.is_main:
                        path = policy_path
                    # loaded, then cast in place: no second copy as reference_model's deepcopy would make
                    self.ref_model = frozen(load_policy(path, **{**load_kwargs, "gradient_checkpointing": False}).model,
                                            self.precision.compute)
                    if from_run:
                        self.par.broadcast_weights(self.ref_model)

        # --- plugins: rollout engine, rewards, advantages, policy loss ---
        self.engine = self.registry.create("rollout_engines", cfg.rollout.engine, bundle=self.bundle,
                                           **cfg.rollout.engine_options)
        if hasattr(self.engine, "set_max_new_tokens"):  # an engine that sizes its sequences up front (vLLM)
            self.engine.set_max_new_tokens(max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens or 0))
        self.reward_fns = [(t, make_reward(self.registry, t.name, t.options)) for t in cfg.rewards.terms]
        self.accuracy_fn = None
        if all(t.name != "accuracy" for t in cfg.rewards.terms):
            self.accuracy_fn = self.registry.create("rewards", "accuracy")
        self.estimator = self.registry.create("advantage_estimators", cfg.algorithm.advantage.name,
                                              **cfg.algorithm.advantage.options)
        loss_options = dict(eps_low=cfg.algorithm.eps_low, eps_high=cfg.algorithm.eps_high, beta=cfg.algorithm.beta,
                            aggregation=cfg.algorithm.aggregation)
        loss_options.update(cfg.algorithm.policy_loss.options)
        self.policy_loss = self.registry.create("policy_losses", cfg.algorithm.policy_loss.name, **loss_options)
        self.shared_prefix = self._shared_prefix()

        # --- optimiser and schedule (the policy as the strategy holds it: itself, DDP, or FSDP shards) ---
        self.train_model = self.par.wrap(self.bundle.model, self.precision)
        self.trainable = [p for p in self.bundle.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                           eps=cfg.optim.adam_eps, weight_decay=cfg.optim.weight_decay)
        self.total_steps = self._total_steps()
        total, warmup, schedule = self.total_steps, cfg.optim.warmup_steps, cfg.optim.schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total=total, warmup=warmup, schedule=schedule))

        # --- data pool and diversity smoothing ---
        self.pool = DataPool(self.train_samples, seed=cfg.seed, source=cfg.synthesis.source)
        self.smoother = DiversitySmoother(cfg.synthesis.gamma, enabled=cfg.synthesis.smoothing)

        # --- restore ---
        if resuming:  # rank 0 reads the checkpoint; the others receive it
            state, blob, optim_state = None, None, None
            if self.par.is_main:
                state, blob = load_state(ckpt)
                optim_state = blob.pop("optimizer", None)
                if is_sharded(ckpt) and self._dcp_resume is None:  # in one process, or ranks without rank 0's disk
                    optim_state = consolidated_optimizer_state(ckpt)
            self.par.wait_for_main()  # rank 0 read the optimizer state alone (the gathered format: all of it)
            state, blob = self.par.broadcast((state, blob))
            replaced = state["pool"]["replaced"]  # synthesized images: files on rank 0's disk, sent as bytes
            state["pool"]["replaced"] = dict(zip(replaced, self._broadcast_samples(list(replaced.values())),
                                                 strict=True))
            self.step = int(state["step"])
            self.pool.load_state_dict(state["pool"])
            self.smoother.load_state_dict(state["smoother"])
            if self._dcp_resume is not None:  # weights and optimizer state: each rank reads its own slices
                load_sharded(self._dcp_resume, self.bundle.model, self.optimizer, process_group=self.par.side_group)
            else:
                self.par.load_optimizer_state(self.bundle.model, self.optimizer, optim_state)
            if blob.get("scheduler") is not None:
                self.scheduler.load_state_dict(blob["scheduler"])
            self.precision.load_state_dict(blob.get("precision", {}))
            restore_rng_state(blob["rng"])

        # the engine samples the policy as it is now (after the warm start, after a resume), on every rank, from
        # the first rollout and the start-of-run evaluation on; a collective under FSDP, a no-op for `hf`
        self.engine.sync_weights(self.bundle.model)

        # --- run directory (rank 0) ---
        if self.par.is_main:
            self.runlog = RunLog(self.run_dir, total_steps=self.total_steps, start_step=self.step,
                                 tensorboard=cfg.logging.tensorboard_on, progress=cfg.logging.progress,
                                 plots=cfg.logging.plots, gallery=cfg.logging.gallery,
                                 gallery_per_epoch=cfg.logging.gallery_per_epoch, trackers=self._trackers)
            self.runlog.write_config(dump_config(cfg), data=cfg.model_dump(mode="json"))
        if self._sft_summary:
            self._message(self._sft_summary)
        if ckpt is not None:
            self._message(f"resumed from {ckpt} at step {self.step}")
        if self.par.sharded:
            self._message(f"sharded (FSDP) over {self.par.world} process(es)")
        elif self.par.enabled:
            self._message(f"data parallel over {self.par.world} processes")
        if self.precision.mixed:
            self._message(f"mixed precision: float32 master weights, {str(self.precision.compute)[6:]} compute")
        self._sharded_checkpoints = self._choose_checkpoint_layout()

        # --- data server (rank 0) ---
        if cfg.synthesis.enabled and self.par.is_main:
            transport = self._transport
            if transport is None:  # the run's own link (syngrpo.synthesis.connect), with the server it may spawn
                link = connect(cfg.synthesis, self.registry, server_dir=self.run_dir / "server", say=self._message)
                transport, self.server = link.transport, link.server
            self.synthesis = SynthesisClient(transport, self.pool, self.task, cfg.synthesis,
                                             self.run_dir / "synth", run_seed=cfg.seed, message=self._message)
            self.synthesis.server = self.server
            if self.pool.in_flight:
                sent = self.synthesis.resubmit_in_flight()
                self._message(f"asked the data server again for {sent} job(s) in flight at the checkpoint")
        self.par.wait_for_main()  # rank 0 started the trackers and the data server alone
        self._ready = True

    def _load_sharded_policy(self, ckpt: Path | None, resuming: bool, policy_path: str, load_kwargs: dict[str, Any],
                             sft_dir: Path) -> None:
        """FSDP: load the policy (and the reference) straight into their shards.

        Rank 0 alone loads a whole model (the base policy, a gathered checkpoint, or a sharded one
        consolidated when some rank cannot read it) and runs the SFT warm start on it; every other
        rank builds the architecture on the meta device and receives its shards from rank 0
        (:meth:`Parallel.shard_from_main`).  Host memory then holds one model on rank 0 and one
        shard on each other rank, where every rank used to hold the whole float32 model and a copy
        of it for the reference.  A sharded checkpoint every rank sees is not read here at all: the
        shards stay empty until each rank reads its slices of it (``load_sharded``, in ``setup``).
        The reference as RL starts is the policy's shards cast to the compute dtype, on each rank.
        ``ckpt`` is known on rank 0 only; every rank decides by ``resuming``.
        """
        from syngrpo.models.policy import frozen, load_policy
        from syngrpo.rundir.checkpoint import consolidated_model_state, is_sharded, model_dir
        from syngrpo.scale.parallel import copy_shards

        cfg, par = self.cfg, self.par
        if not par.is_main or self._dcp_resume is not None:
            self.bundle = load_policy(policy_path, empty=True, **load_kwargs)
        elif ckpt is not None:
            weights = consolidated_model_state(ckpt) if is_sharded(ckpt) else None
            self.bundle = load_policy(str(model_dir(ckpt)), state_dict=weights, **load_kwargs)
            if weights is not None:  # that directory holds no weights (the vLLM engine loads from here)
                self.bundle.name_or_path = policy_path
            del weights
        else:
            self.bundle = load_policy(policy_path, **load_kwargs)
        self.precision.upcast_trainable(self.bundle.model)
        if not resuming and cfg.sft.enabled and par.is_main:
            self._run_sft(sft_dir)  # on rank 0's whole policy, before it is sharded
        par.wait_for_main()  # rank 0 loaded (and warm-started) alone
        device, mp = self.bundle.device, self.precision.fsdp_policy()
        if self._dcp_resume is not None:
            par.shard_empty(self.bundle.model, mp_policy=mp, device=device)
        else:
            par.shard_from_main(self.bundle.model, mp_policy=mp, device=device)
        self.ref_model = None
        if cfg.algorithm.beta <= 0:
            return
        compute = self.precision.compute  # the reference is never updated: no float32 master
        ref_kwargs = {**load_kwargs, "dtype": compute, "gradient_checkpointing": False}
        if not resuming and cfg.model.reference is None:  # the policy as RL starts
            ref = frozen(load_policy(policy_path, empty=True, **ref_kwargs).model, compute)
            par.shard_empty(ref, mp_policy=None, device=device)
            copy_shards(self.bundle.model, ref)
        else:  # another model, or the warm start (rank 0's sft/): rank 0 loads it whole, the others get shards
            path = cfg.model.reference or (str(sft_dir) if cfg.sft.enabled else policy_path)
            if par.is_main:
                ref = frozen(load_policy(path, **ref_kwargs).model, compute)
            else:
                ref = frozen(load_policy(policy_path, empty=True, **ref_kwargs).model, compute)
            par.wait_for_main()
            par.shard_from_main(ref, mp_policy=None, device=device)
        self.ref_model = ref

    def _choose_checkpoint_layout(self) -> bool:
        """Whether checkpoints are written sharded (``parallel.checkpoint``; a collective under FSDP).

        Sharded needs every rank to write into rank 0's run directory: ``auto`` checks that the ranks
        share it and otherwise gathers on rank 0 (the layout nodes without a shared disk need).
        """
        choice = self.cfg.parallel.checkpoint
        if not self.par.sharded or choice == "full":
            return False
        shared = self.par.shared_path(self.run_dir / "checkpoints" if self.par.is_main else None)
        if shared is None:
            if choice == "sharded":
                raise ConfigError("parallel.checkpoint: sharded needs every rank to see rank 0's run directory "
                                  f"({self.run_dir}); use parallel.checkpoint: full (or auto) without a shared disk")
            self._message("checkpoints gathered on rank 0: the ranks do not share its run directory")
        return shared is not None

    def sampling(self) -> contextlib.AbstractContextManager[Any]:
        """Where rollouts and evaluation run: the whole policy on every rank (FSDP gathers its shards; a
        collective) and the compute dtype (autocast over the float32 masters; see precision.py).

        Only for an engine that samples the policy module itself (``hf``); one that holds its own
        weights (``samples_from_policy = False``, vLLM) gets them through ``sync_weights``.
        """
        stack = contextlib.ExitStack()
        if not getattr(self.engine, "samples_from_policy", True):
            return stack
        stack.enter_context(self.par.full_weights(self.bundle.model))
        stack.enter_context(self.precision.autocast())
        return stack

    def _broadcast_samples(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rank 0's sample records on every rank, their image files sent as bytes (nodes share no disk).

        The other ranks write the images into their own run directory and get records pointing there.
        """
        if not self.par.enabled:
            return records
        payload = None
        if self.par.is_main:
            payload = [(r, Path(r["image"]).read_bytes() if Path(r["image"]).is_file() else None) for r in records]
        payload = self.par.broadcast(payload)
        if self.par.is_main:
            return records
        folder = self.run_dir / "synth" / "received"
        out = []
        for record, data in payload:
            if data is not None:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / Path(record["image"]).name
                path.write_bytes(data)
                record = {**record, "image": str(path)}
            out.append(record)
        return out

    def _message(self, text: str) -> None:
        if self.runlog is not None:
            self.runlog.message(text)
        else:
            log.info(text)

    def _run_sft(self, sft_dir: Path) -> None:
        from syngrpo.train.sft import run_sft

        cfg = self.cfg
        t0 = time.perf_counter()
        vp = cfg.sft.vision_pretrain
        vision = None
        if vp.steps:  # a stand-in for a pretrained vision encoder (docs/study.md), on images of its own
            from syngrpo.train.vision_pretrain import pretrain_vision

            vision = pretrain_vision(self.bundle, self.task, self._toy_split("pretrain", vp.n_images, vp.styles),
                                     steps=vp.steps,
                                     lr=vp.lr, batch_size=vp.batch_size, seed=cfg.seed,
                                     object_labels=vp.object_labels,
                                     progress=cfg.logging.progress and sys.stderr.isatty())
        samples = self._toy_split("sft", cfg.sft.n_images, cfg.sft.styles) if cfg.sft.n_images else self.train_samples

        def sft(mode: str, steps: int) -> dict[str, Any]:
            # the warm start runs on rank 0's unsharded policy, in the run's precision (autocast on float32 masters)
            return run_sft(self.bundle, self.task, samples, steps=steps, lr=cfg.sft.lr, batch_size=cfg.sft.batch_size,
                           mode=mode, seed=cfg.seed, answer_weight=cfg.sft.answer_weight,
                           precision=dataclasses.replace(self.precision, sharded=False),
                           progress=cfg.logging.progress and sys.stderr.isatty())

        # the cheaper plain-format steps first (config.SFTConfig.plain_steps), then the run's own format
        plain = sft("plain", cfg.sft.plain_steps) if cfg.sft.plain_steps and self.response_mode != "plain" else None
        result = sft(self.response_mode, cfg.sft.steps)
        self.bundle.model.save_pretrained(str(sft_dir), safe_serialization=True)
        self.bundle.processor.save_pretrained(str(sft_dir))
        (sft_dir / "sft_stats.json").write_text(json.dumps({**result, "vision_pretrain": vision, "plain": plain},
                                                           indent=1), encoding="utf-8")
        self._sft_summary = (f"SFT warm start: {cfg.sft.steps} steps in {time.perf_counter() - t0:.0f} s, "
                             f"loss {result.get('loss_first', float('nan')):.3f} -> "
                             f"{result.get('loss_mean_last10', float('nan')):.3f}")
        if vision is not None:
            self._sft_summary += (f" (after {vision['steps']} steps of vision pre-training, object tokens "
                                  f"{100 * vision['object_token_accuracy']:.0f} % right)")

    def _toy_split(self, split: str, n: int, styles: list[str]) -> list[Sample]:
        """``n`` toy images of a split of their own (``data.toy`` settings) beside the train and eval splits,
        shared among background ``styles`` (each style then a split of its own: ``<split>-<style>``)."""
        toy = self.cfg.data.toy
        out = Path(self.cfg.data.toy_dir) if self.cfg.data.toy_dir else self.run_dir / "data"
        if list(styles) == ["plain"]:  # the default: no style argument, which not every task's generator takes
            return self.task.make_toy_dataset(out / split, n=n, seed=toy.seed, split=split,
                                              image_size=toy.image_size, **toy.options)
        k = len(styles)
        return [s for i, style in enumerate(styles)
                for s in self.task.make_toy_dataset(out / f"{split}-{style}", n=n // k + (i < n % k), seed=toy.seed,
                                                    split=f"{split}-{style}", image_size=toy.image_size,
                                                    **{**toy.options, "style": style})]

    def _shared_prefix(self) -> bool:
        from syngrpo.models.scoring import supports_shared_prefix

        choice = self.cfg.algorithm.shared_prefix
        if choice == "auto":
            return (supports_shared_prefix(self.bundle.model, self.bundle.family)
                    and not self.cfg.model.gradient_checkpointing)
        return choice == "true"

    def _total_steps(self) -> int:
        return self.cfg.optim.total_steps(len(self.train_samples))

    # ---- the loop -------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Run (or continue) the loop to the last step, evaluate, checkpoint; returns a summary.

        ``until`` stops after that step instead (as if the run were interrupted there); calling
        ``train`` again continues.
        """
        if not self._ready:
            self.setup()
        cfg, rl = self.cfg, self.runlog  # rl is None on ranks other than 0: they train and stay quiet
        main = self.par.is_main
        last_epoch = self.pool.epoch
        metrics: dict[str, Any] = {}
        if cfg.eval.at_start and self.step == 0:
            with self.sampling():  # every rank enters (FSDP gathers the shards); rank 0 evaluates
                if main:
                    rl.log(0, {"progress": 0.0, **self._eval_metrics(self.evaluate(0))})
            self.par.wait_for_main()  # however long rank 0's evaluation takes (parallel.main_wait)
        try:
            stop = self.total_steps if until is None else min(until, self.total_steps)
            while self.step < stop:
                step = self.step + 1
                metrics = self.train_step(step)
                self.step = step
                evaluate = (cfg.eval.every and step % cfg.eval.every == 0) or (step == self.total_steps
                                                                               and cfg.eval.at_end)
                if evaluate:
                    with self.sampling():
                        if main:
                            metrics.update(self._eval_metrics(self.evaluate(step)))
                if main:
                    rl.log(step, metrics)
                    if cfg.logging.samples_every and step % cfg.logging.samples_every == 0 and self._step_samples:
                        rl.samples(step, self._step_samples)
                    for rep in self._step_replacements:
                        rl.gallery_add(step=step, epoch=rep.job.epoch, origin_id=rep.job.origin_id,
                                       original=self.pool.original(rep.job.origin_id).image,
                                       synthesized=rep.sample.image, description=rep.sample.description or "",
                                       generation=rep.sample.generation, key=rep.job.key)
                    if self.pool.epoch != last_epoch:
                        rl.write_gallery()
                        rl.write_plots()
                self.par.wait_for_main()  # rank 0 evaluated and logged alone (trackers may upload slowly)
                last_epoch = self.pool.epoch
                if (cfg.logging.save_every and step % cfg.logging.save_every == 0) or step == self.total_steps:
                    self.save()
        finally:
            if rl is not None:
                rl.write_plots()
                rl.write_gallery()
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "last": metrics}
        if self._last_eval is not None:
            summary["eval"] = self._last_eval.metrics
        return summary

    def evaluate(self, step: int | None = None) -> EvalResult:
        """Greedy evaluation on the eval split; writes ``eval/step-N.{json,md}`` into the run directory.

        Under FSDP call it inside :meth:`sampling` entered by every rank (``train`` does): the
        shards must be gathered for ``generate``.
        """
        cfg = self.cfg
        result = evaluate_policy(self.bundle, self.task, self.eval_samples, engine=self.engine,
                                 response_mode=self.response_mode, batch_size=cfg.eval.batch_size,
                                 max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                                 progress=False)
        step = self.step if step is None else step
        write_report(result, self.run_dir / "eval", name=f"step-{step:06d}",
                     info={"task": cfg.data.task, "split": cfg.eval.split or cfg.data.eval or "toy", "step": step})
        self._last_eval = result
        if self.runlog is not None:
            self.runlog.eval_table(step, result.metrics)
            head = result.headline
            self.runlog.message(f"eval at step {step}: " + (f"{head[0]} = {head[1]:.4f}" if head else "no metric"))
        return result

    @staticmethod
    def _eval_metrics(result: EvalResult) -> dict[str, float]:
        out = {f"eval/{k}": v for k, v in result.metrics.items()}
        head = result.headline
        if head is not None:
            out["eval/score"] = head[1]
        return out

    def state_dict(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: data position, pool, smoother, synthesis health."""
        return {
            "total_steps": self.total_steps,
            "pool": self.pool.state_dict(),
            "smoother": self.smoother.state_dict(),
            "synthesis_healthy": self.synthesis.healthy if self.synthesis is not None else None,
        }

    def save(self) -> Path:
        """Checkpoint the current step; every rank waits until it is on disk (``parallel.main_wait``).

        The weights are the float32 masters and the optimizer state is keyed by parameter name, so
        any strategy resumes it.  Sharded (FSDP, ``parallel.checkpoint``): every rank writes its own
        shards into rank 0's checkpoint directory at once (DCP, over the side group, so a slow disk is
        bounded by ``parallel.main_wait``), then rank 0 adds the small files.  Otherwise the full
        state is gathered on rank 0 (FSDP) or taken from its replica, and rank 0 writes it alone.
        """
        from syngrpo.rundir.checkpoint import (
            SHARDED_DIR,
            checkpoint_name,
            prepare_checkpoint,
            save_checkpoint,
            save_sharded,
        )

        path = self.run_dir / "checkpoints" / checkpoint_name(self.step)
        common = dict(model=self.bundle.model, processor=self.bundle.processor, optimizer=None,
                      scheduler=self.scheduler, keep_last=self.cfg.logging.keep_last,
                      extra_torch={"precision": self.precision.state_dict()})
        if self._sharded_checkpoints:
            tmp = self.par.broadcast(str(prepare_checkpoint(self.run_dir, self.step)) if self.par.is_main else None)
            save_sharded(Path(tmp) / SHARDED_DIR, self.bundle.model, self.optimizer, process_group=self.par.side_group)
            if self.par.is_main:
                path = save_checkpoint(self.run_dir, self.step, state=self.state_dict(), sharded=True, **common)
        else:
            model_state = self.par.full_model_state(self.bundle.model)  # collectives: every rank takes part
            optimizer_state = self.par.optimizer_state(self.bundle.model, self.optimizer)
            if self.par.is_main:
                path = save_checkpoint(self.run_dir, self.step, state=self.state_dict(), model_state=model_state,
                                       optimizer_state=optimizer_state, **common)
        if self.par.is_main:
            self._message(f"checkpoint saved: {path}")
        self.par.wait_for_main()
        return path

    def close(self) -> None:
        """Stop the data server this run started, close the transport, engine and logs."""
        if self.synthesis is not None:
            self.synthesis.close()
            self.synthesis = None
        if getattr(self, "engine", None) is not None:
            try:
                self.engine.close()
            except Exception as exc:  # pragma: no cover
                log.debug("closing engine: %s", exc)
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.runlog is not None:
            self.runlog.close()
            self.runlog = None
        if getattr(self, "par", None) is not None:
            self.par.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _load_adapters(model: Any, directory: Path) -> None:
    """Put the LoRA adapter weights a checkpoint saved (``adapter_model.safetensors``) into a peft model."""
    from safetensors.torch import load_file

    from syngrpo.errors import require

    peft = require("peft", extra="lora", what="resuming a LoRA run", hint="pip install peft")
    peft.set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))


def _split(items: list[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous chunks of near-equal size (the first ones one longer)."""
    k, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + k + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


