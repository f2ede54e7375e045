"""The Syn-GRPO trainer: the recipe that wires a run's components and runs the loop.

:meth:`Trainer.train_step` is the whole algorithm of paper §3.3.2 for one batch, read top to bottom:

1. draw a batch from the data pool (originals, some replaced by synthesized samples);
2. encode each image with the task's question and the response-format instructions;
3. roll out G responses per prompt (steps 1-3 and the reward terms: :mod:`syngrpo.train.rollouts`, which
   with DAPO's dynamic sampling also drops the groups without signal and refills the batch);
4. parse them and score them: r_i = R_acc + R_format + R_diversity (eq. 7), where
   R_diversity compares each response's predicted diversity with the group's measured
   diversity V(q) (eq. 4), smoothed across batches (§3.3.2, eq. 6) -- :mod:`syngrpo.train.rewards`;
5. turn rewards into group advantages (eq. 1, or a registered variant);
6. score the completions under the policy (and the reference model for the KL term)
   and take one optimizer step on the registered policy loss -- :mod:`syngrpo.train.update`;
7. pick one description per prompt (eq. 8) and send it to the data server without
   waiting (``async``), or wait for the images (``sync``, the Table 5 ablation);
8. fold every synthesized image that came back into the pool;

then reports what happened (:mod:`syngrpo.train.report`).  :meth:`Trainer.setup` is a list of
``_setup_*`` calls, one concern each, that build the components from the config through
:mod:`syngrpo.train.components` (torchtune's recipe ``setup``).  The rest is orchestration: pre-flight
(:mod:`syngrpo.train.preflight`), the SFT warm start (:mod:`syngrpo.train.warm_start`), the data-server
link (:mod:`syngrpo.synthesis.connect`, :mod:`syngrpo.synthesis.client`), logging
(:mod:`syngrpo.rundir.runlog`), checkpoints, resume and files shipped between nodes
(:mod:`syngrpo.train.run_state`), evaluation (:mod:`syngrpo.train.evaluate`) and data parallelism under
``torchrun`` (:mod:`syngrpo.scale.parallel`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syngrpo.algo.diversity import DiversitySmoother
from syngrpo.config import TrainConfig, check_runnable
from syngrpo.config.io import dump_config
from syngrpo.data.pool import DataPool
from syngrpo.models.resolve import resolve_policy
from syngrpo.plugins import get_registry, load_local_plugins
from syngrpo.rundir.progress import phase
from syngrpo.rundir.runlog import RunLog
from syngrpo.rundir.trackers import build_trackers
from syngrpo.scale.memory import PhasePeaks
from syngrpo.scale.parallel import Parallel
from syngrpo.synthesis.client import StepSynthesis, SynthesisClient
from syngrpo.synthesis.connect import connect
from syngrpo.train import components as build
from syngrpo.train import run_state
from syngrpo.train.components import lr_factor
from syngrpo.train.data import load_split
from syngrpo.train.evaluate import EvalResult, evaluate_policy, write_report
from syngrpo.train.interrupt import StopAtStepEnd
from syngrpo.train.preflight import CheckReport, check_config
from syngrpo.train.report import MAIN_ONLY, StepRecord, eval_metrics, log_step, sample_records, step_metrics
from syngrpo.train.rewards import select_descriptions
from syngrpo.train.rollouts import RolloutCollector
from syngrpo.train.warm_start import warm_start_run
from syngrpo.types import Sample

log = logging.getLogger(__name__)

__all__ = ["Trainer", "lr_factor", "step_seed"]  # lr_factor: its 0.1 import path


def step_seed(run_seed: int, step: int, what: str) -> int:
    """A seed fixed by (run seed, step, purpose): sampling never depends on how the run got to this step."""
    return zlib.crc32(f"{run_seed}/{step}/{what}".encode()) & 0x7FFFFFFF


class Trainer:
    """Wires the components a config names and runs Syn-GRPO (see the module docstring).

    ``transport`` replaces the one the config would create (tests pass an
    in-process transport); ``registry`` replaces the installed plugins; ``resume``
    is a run directory or checkpoint to continue from (the run directory then
    stays the same).  Under ``torchrun`` each process is one rank of a
    data-parallel run (:mod:`syngrpo.scale.parallel`).

    Use: ``with Trainer(cfg, run_dir) as t: summary = t.train()`` (``setup()``, ``train_step(step)``: tests, notebooks).
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
        self.saved_step: int | None = None  # the step of the latest checkpoint (``--resume`` goes back to it)
        self._sft_summary = ""
        self.par = Parallel()
        self.precision: Any = None  # syngrpo.scale.precision.Precision, set by setup()
        self._stream_suffix = ""
        self._dcp_resume: Path | None = None  # a sharded checkpoint every rank reads its slices of (setup)
        self._resume_note = ""  # the damaged checkpoints the resume passed over (setup)
        self._sharded_checkpoints = False  # set by setup (parallel.checkpoint)
        self._step_samples: list[dict[str, Any]] = []
        self._step_replacements: list[Any] = []

    @property
    def registry(self) -> Any:
        if self._registry is None:
            local = load_local_plugins(self.cfg.plugins)  # the config's own plugin modules / files
            self._registry = get_registry(local) if local else get_registry()
        return self._registry

    @property
    def response_mode(self) -> str:
        return self.cfg.response_mode

    # ---- one training step -----------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, Any]:
        """One Syn-GRPO step (paper §3.3.2); returns its metrics."""
        cfg, bundle = self.cfg, self.bundle
        t_start = time.perf_counter()
        peaks = PhasePeaks(bundle.device)  # per-phase CUDA peaks: what `syngrpo plan` predicts, measured

        # 1-4. a batch of prompts from the data pool (some samples may already be synthesized; under torchrun
        #      each rank keeps its slice), G responses per prompt (MC-GRPO: one more), parsed and scored by the
        #      reward terms (R_acc, R_format, ...) -- :mod:`syngrpo.train.rollouts`; with dynamic sampling
        #      (DAPO) the groups whose accuracy does not vary are dropped and the batch refilled from more prompts
        batch = self.collect(step)
        samples, rollout, parsed, epoch = batch.samples, batch.rollout, batch.parsed, batch.epoch
        G = rollout.group_size
        peaks.end("rollout")
        # R_diversity over the batch that trains: V(q) smoothed across batches, against each <score> (eqs. 4-7)
        rewards = self.rewards.add_diversity(batch.rewards, parsed)

        # 5. group advantages (eq. 1 or a registered variant) and the rollouts that take part
        advantages = self.estimator(rewards.matrix).reshape(-1)  # (B*G,)
        keep = self.estimator.keep_mask(rewards.matrix).reshape(-1)  # (B*G,) bool

        # 6. policy update: log-probs under the policy (and old policy / reference), loss, backward, step;
        #    then the rollout engine takes the new weights
        t0 = time.perf_counter()
        update = self.update(rollout, advantages, keep)
        self.engine.sync_weights(bundle.model)
        t_update = time.perf_counter() - t0
        peaks.end("update")

        # 7. description selection (eq. 8) and synthesis requests (never blocking in async mode);
        # 8. the synthesized samples that came back replace their sources in the pool
        chosen: list[int | None] = [None] * len(samples)
        synthesis = StepSynthesis()
        if cfg.synthesis.enabled:
            # `random` (the ablation) draws among the usable descriptions instead, seeded by (run seed, step)
            pick = (random.Random(step_seed(cfg.seed, step, f"describe{self._stream_suffix}"))
                    if cfg.synthesis.description_selection == "random" else None)
            chosen = select_descriptions(parsed, rewards, rng=pick)
            requests = [(samples[b], parsed[b * G + i].description.strip())
                        for b, i in enumerate(chosen) if i is not None]
            synthesis = self._synthesize(step, epoch, requests)

        # what the step reports: metrics.jsonl (means over ranks under torchrun) and samples.jsonl
        record = StepRecord(samples=samples, epoch=epoch, rollout=rollout, parsed=parsed, rewards=rewards,
                            advantages=advantages, update=update, synthesis=synthesis, chosen=chosen,
                            seconds={"rollout": batch.seconds, "update": t_update}, peaks=peaks.metrics,
                            sampling=batch.report if cfg.algorithm.dynamic_sampling.enabled else None)
        metrics = step_metrics(record, lr=self.scheduler.get_last_lr()[0], pool=self.pool, smoother=self.smoother,
                               syn_mode=self.response_mode == "syn", synthesis_on=cfg.synthesis.enabled,
                               client=self.synthesis)
        metrics["time/step"] = time.perf_counter() - t_start
        metrics = self.par.mean_metrics(metrics, main_only=MAIN_ONLY)
        self._step_samples = sample_records(record, cfg.logging.samples_per_step)
        self._step_replacements = synthesis.replacements
        return metrics

    def _synthesize(self, step: int, epoch: int, requests: list[tuple[Sample, str]]) -> StepSynthesis:
        """Send the global batch's (sample, description) requests and fold what came back into every pool.

        Rank 0 alone talks to the data server; the new samples reach the other ranks' pools by broadcast,
        images as bytes, so every rank's pool stays the same.
        """
        report = StepSynthesis()
        requests = [r for part in self.par.gather(requests) for r in part]  # the global batch's choices
        if self.synthesis is not None:
            self.synthesis.exchange(step, epoch, requests, report)
        run_state.share_replacements(self.par, report.replacements, self.pool, self.run_dir)
        return report

    # ---- setup: the components a config names, built one concern at a time -----------------------
    def setup(self) -> None:
        """Build the run from its config; restore a checkpoint when resuming.

        The order is the recipe's: the checks before anything costs, the checkpoint found before the
        policy loads, the warm start before the reference copies the policy, the optimizer before its
        state is restored, the engine given the weights as RL starts.
        """
        # a run that fails before it starts leaves no run directory it created behind (run_state)
        with run_state.removed_if_setup_fails(self.run_dir, owner=lambda: self.par.is_main):
            self._setup_parallel()  # seeds, process group and strategy, precision
            checks = self._setup_checks()  # `syngrpo check` and the trackers, before any model loads
            ckpt = self._setup_resume()  # the checkpoint to continue from (rank 0 reads it)
            self._setup_data(checks)  # task, train and eval splits, the data pool
            self._setup_policy(ckpt)  # policy, SFT warm start, reference model
            self._setup_algorithm()  # engine, rewards, advantages, loss, optimizer and schedule, the update
            if self.resume_from is not None:
                self._restore(ckpt)
            # the engine samples the policy as it is now (after the warm start, after a resume), on every rank,
            # from the first rollout and the start-of-run evaluation on; a collective under FSDP, a no-op for `hf`
            self.engine.sync_weights(self.bundle.model)
            self._setup_run_dir(ckpt)  # run log and config.yaml (rank 0), the checkpoint layout
            self._setup_synthesis()  # the data server link (rank 0)
            self.par.wait_for_main()  # rank 0 started the trackers and the data server alone
        self._ready = True

    def _setup_parallel(self) -> None:
        """Seeds; this process's rank and the run's config and strategy (rank 0's under torchrun); precision."""
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % (2**32))
        torch.manual_seed(self.cfg.seed)
        self.par, self.cfg = build.join_run(self.cfg)
        self._stream_suffix = f"/{self.par.rank}" if self.par.enabled else ""
        self.precision = build.run_precision(self.cfg, self.par)

    def _setup_checks(self) -> CheckReport:
        """Pre-flight (`syngrpo check`: config, plugins, every dataset record) before anything costs; then the
        trackers (a missing extra, wandb or mlflow, is an error before any model loads)."""
        checks = check_config(self.cfg, self.registry)
        checks.raise_for_errors()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._trackers = (build_trackers(self.registry, self.cfg.logging.trackers, self.cfg.logging.tracker_options)
                          if self.par.is_main else None)
        return checks

    def _setup_resume(self) -> Path | None:
        """The checkpoint to resume from (rank 0 alone reads it: ``None`` elsewhere; :mod:`.run_state`)."""
        if self.resume_from is None:
            return None
        ckpt, self._dcp_resume, self._resume_note = run_state.find_checkpoint(self.par, self.resume_from)
        return ckpt

    def _setup_data(self, checks: CheckReport) -> None:
        """The task, its train and eval splits (less the samples pre-flight drops), the data pool."""
        cfg, par = self.cfg, self.par
        self.task = self.registry.create("tasks", cfg.data.task, **cfg.data.task_options)
        # toy data is drawn by each rank into its own folder (the same images; no two writers of a file)
        toy_sub = f"rank{par.rank}" if par.enabled and not par.is_main else ""
        self.train_samples = checks.load(lambda: load_split(cfg, self.task, "train", self.run_dir, subdir=toy_sub), "train")
        self.eval_samples = checks.load(lambda: load_split(cfg, self.task, "eval", self.run_dir, subdir=toy_sub), "eval")
        self._drops = checks.drops  # said in train.log once it exists (_setup_run_dir)
        self.pool = DataPool(self.train_samples, seed=cfg.seed, source=cfg.synthesis.source)

    def _setup_policy(self, ckpt: Path | None) -> None:
        """The policy (from the checkpoint when resuming), the SFT warm start, the reference model."""
        cfg, par = self.cfg, self.par
        policy_path = resolve_policy(cfg.model)
        par.wait_for_main()  # a rank that built the tiny policy (the others may have found it built)
        load_kwargs = build.policy_load_options(cfg.model, self.precision, par.device(cfg.model.device),
                                                lora=cfg.model.lora.enabled)
        resuming, sft_dir = self.resume_from is not None, self.run_dir / "sft"
        if par.sharded:  # FSDP: the policy and the reference go straight into their shards
            self._load_sharded_policy(ckpt, resuming, policy_path, load_kwargs, sft_dir)
        else:
            self.bundle, self.ref_model = build.load_policy_and_reference(
                cfg, par, self.precision, ckpt=ckpt, resuming=resuming, policy_path=policy_path,
                load_kwargs=load_kwargs, sft_dir=sft_dir, warm_start=self._warm_start)

    def _load_sharded_policy(self, ckpt: Path | None, resuming: bool, policy_path: str, load_kwargs: dict[str, Any],
                             sft_dir: Path) -> None:
        """FSDP: :func:`~syngrpo.train.components.load_sharded_policy_and_reference` (a method: tests measure it)."""
        self.bundle, self.ref_model = build.load_sharded_policy_and_reference(
            self.cfg, self.par, self.precision, ckpt=ckpt, resuming=resuming, dcp_resume=self._dcp_resume,
            policy_path=policy_path, load_kwargs=load_kwargs, sft_dir=sft_dir, warm_start=self._warm_start)

    def _warm_start(self, bundle: Any) -> None:
        """The SFT warm start on rank 0's whole policy, saved to ``<run>/sft`` (:mod:`syngrpo.train.warm_start`)."""
        done = warm_start_run(self.cfg, bundle, self.task, self.train_samples, self.run_dir,
                              precision=self.precision, folder=self.run_dir / "sft")
        self._sft_summary = done.summary()

    def _setup_algorithm(self) -> None:
        """The plugins a step calls (engine, rewards, estimator, policy loss) and the optimisation around them."""
        cfg, registry = self.cfg, self.registry
        most = max((s.num_images for s in (*self.train_samples, *self.eval_samples)), default=1)
        self.engine = build.build_engine(registry, cfg, self.bundle, max_images=most)
        self.smoother = DiversitySmoother(cfg.synthesis.gamma, enabled=cfg.synthesis.smoothing)
        self.rewards = build.build_rewards(registry, cfg, smoother=self.smoother, par=self.par)
        self.estimator = build.build_estimator(registry, cfg)
        self.collect = RolloutCollector(  # steps 1-4: prompts, rollouts, reward terms; dynamic sampling
            cfg, pool=self.pool, par=self.par, engine=self.engine, bundle=self.bundle, task=self.task,
            rewards=self.rewards, group_size=cfg.rollout.num_generations + self.estimator.extra_rollouts,
            response_mode=self.response_mode, sampling=self.sampling,
            seed=lambda step, what: step_seed(cfg.seed, step, f"{what}{self._stream_suffix}"), say=self._message)
        self.policy_loss = build.build_policy_loss(registry, cfg)
        self.shared_prefix = build.use_shared_prefix(cfg, self.bundle)
        # the policy as the strategy holds it (itself, DDP, or FSDP shards) and what the optimizer updates
        self.train_model = self.par.wrap(self.bundle.model, self.precision)
        self.trainable = [p for p in self.bundle.model.parameters() if p.requires_grad]
        self.optimizer = build.build_optimizer(cfg, self.trainable)
        self.total_steps = cfg.optim.total_steps(len(self.train_samples))
        self.scheduler = build.build_scheduler(cfg, self.optimizer, self.total_steps)
        self.update = build.build_update(cfg, model=self.train_model, policy=self.bundle.model,
                                         ref_model=self.ref_model, optimizer=self.optimizer, scheduler=self.scheduler,
                                         trainable=self.trainable, policy_loss=self.policy_loss,
                                         precision=self.precision, par=self.par, shared_prefix=self.shared_prefix)

    def _restore(self, ckpt: Path | None) -> None:
        """The checkpoint's state in every component (:func:`syngrpo.train.run_state.restore`)."""
        self.step = run_state.restore(self.par, ckpt, dcp_resume=self._dcp_resume, run_dir=self.run_dir,
                                      model=self.bundle.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                      precision=self.precision, pool=self.pool, smoother=self.smoother)
        self.saved_step = self.step

    def _setup_run_dir(self, ckpt: Path | None) -> None:
        """Rank 0's run log and ``config.yaml``; what the run is, said once; the checkpoint layout."""
        cfg, par = self.cfg, self.par
        if par.is_main:
            self.runlog = RunLog.for_run(self.run_dir, cfg.logging, total_steps=self.total_steps,
                                         start_step=self.step, trackers=self._trackers,
                                         response_format=self.response_mode)
            self.runlog.write_config(dump_config(cfg), data=cfg.model_dump(mode="json"))
        for line in [*self._drops, self._sft_summary]:  # data.bad_samples: drop, one line a record; the SFT
            if line:
                self._message(line)
        if ckpt is not None:  # and the newer checkpoints it passed over, with what was wrong with each
            note = f" ({self._resume_note})" if self._resume_note else ""
            self._message(f"resumed from {ckpt} at step {self.step}{note}")
        if par.sharded:
            self._message(f"sharded (FSDP) over {par.world} process(es)")
        elif par.enabled:
            self._message(f"data parallel over {par.world} processes")
        if self.precision.mixed:
            self._message(f"mixed precision: float32 master weights, {str(self.precision.compute)[6:]} compute")
        self._sharded_checkpoints = run_state.sharded_layout(par, cfg.parallel.checkpoint, self.run_dir, self._message)

    def _setup_synthesis(self) -> None:
        """Rank 0's link to the data server (:func:`syngrpo.synthesis.connect.connect`), and the jobs a
        resumed run had in flight, asked for again."""
        cfg = self.cfg
        if not (cfg.synthesis.enabled and self.par.is_main):
            return
        transport = self._transport
        if transport is None:
            link = connect(cfg.synthesis, self.registry, server_dir=self.run_dir / "server", say=self._message)
            transport, self.server = link.transport, link.server
        self.synthesis = SynthesisClient(transport, self.pool, self.task, cfg.synthesis, self.run_dir / "synth",
                                         run_seed=cfg.seed, message=self._message)
        self.synthesis.server = self.server
        if self.pool.in_flight:
            sent = self.synthesis.resubmit_in_flight()
            self._message(f"asked the data server again for {sent} job(s) in flight at the checkpoint")

    # ---- orchestration ---------------------------------------------------------------------------
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

    def _message(self, text: str) -> None:
        if self.runlog is not None:
            self.runlog.message(text)
        else:
            log.info(text)

    # ---- the loop --------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Run (or continue) the loop to the last step, evaluate, checkpoint; returns a summary.

        ``until`` stops after that step instead (as if interrupted there); calling ``train`` again continues."""
        if not self._ready:
            self.setup()
        cfg, rl = self.cfg, self.runlog  # rl is None on ranks other than 0: they train and stay quiet
        main = self.par.is_main
        last_epoch = self.pool.epoch
        metrics: dict[str, Any] = {}
        # Ctrl-C: the step in flight finishes and is checkpointed (a second Ctrl-C stops at once; interrupt.py)
        in_flight = [False]  # whether train_step runs now (Ctrl-C then finishes step self.step + 1 first)
        stopper = StopAtStepEnd(self._message, lambda: (self.step + in_flight[0], self.saved_step),
                                enabled=not self.par.enabled)
        try:
            with stopper:
                if cfg.eval.at_start and self.step == 0:
                    with self.sampling():  # every rank enters (FSDP gathers the shards); rank 0 evaluates
                        if main:
                            rl.log(0, {"progress": 0.0, **eval_metrics(self.evaluate(0))})
                    self.par.wait_for_main()  # however long rank 0's evaluation takes (parallel.main_wait)
                if rl is not None:
                    rl.start_steps()
                stop = self.total_steps if until is None else min(until, self.total_steps)
                while self.step < stop and not stopper.requested:
                    step = self.step + 1
                    in_flight[0] = True
                    metrics = self.train_step(step)
                    self.step, in_flight[0] = step, False
                    evaluate = (cfg.eval.every and step % cfg.eval.every == 0) or (step == self.total_steps
                                                                                   and cfg.eval.at_end)
                    if evaluate:
                        with self.sampling():
                            if main:
                                metrics.update(eval_metrics(self.evaluate(step)))
                    if main:
                        log_step(rl, step, metrics, self._step_samples, self._step_replacements, self.pool,
                                 samples_every=cfg.logging.samples_every, epoch_ended=self.pool.epoch != last_epoch)
                    self.par.wait_for_main()  # rank 0 evaluated and logged alone (trackers may upload slowly)
                    last_epoch = self.pool.epoch
                    if (cfg.logging.save_every and step % cfg.logging.save_every == 0) or step == self.total_steps:
                        self.save()
                if stopper.requested and self.saved_step != self.step:
                    self.save()
            if self.synthesis is not None and self.step >= self.total_steps:
                self.synthesis.finish()  # synthesised nothing, or too little: synthesis.on_failure (after the save)
        finally:
            if rl is not None:
                rl.write_plots()
                rl.write_gallery()
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "last": metrics, "interrupted": stopper.requested}
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
                                 progress=cfg.logging.progress and self.par.is_main,
                                 desc=f"eval at step {self.step if step is None else step}",
                                 progress_interval_s=cfg.logging.progress_interval_s)
        step = self.step if step is None else step
        write_report(result, self.run_dir / "eval", name=f"step-{step:06d}",
                     info={"task": cfg.data.task, "split": cfg.eval.split or cfg.data.eval or "toy", "step": step})
        self._last_eval = result
        if self.runlog is not None:
            self.runlog.eval_table(step, result.metrics)
            head = result.headline
            self.runlog.message(f"eval at step {step}: " + (f"{head[0]} = {head[1]:.4f}" if head else "no metric"))
        return result

    def state_dict(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: data position, pool, smoother, synthesis health."""
        return {"total_steps": self.total_steps, "pool": self.pool.state_dict(), "smoother": self.smoother.state_dict(),
                "synthesis_healthy": self.synthesis.healthy if self.synthesis is not None else None}

    def save(self) -> Path:
        """Checkpoint the current step (:func:`syngrpo.train.run_state.save`: float32 masters, optimizer state by
        parameter name, sharded or gathered); every rank waits until it is on disk (``parallel.main_wait``)."""
        shown = self.cfg.logging.progress and self.par.is_main
        with phase(f"writing the checkpoint of step {self.step}", enabled=shown,
                   interval_s=self.cfg.logging.progress_interval_s):
            path = run_state.save(self.par, self.run_dir, self.step, sharded=self._sharded_checkpoints,
                                  bundle=self.bundle, optimizer=self.optimizer, scheduler=self.scheduler,
                                  precision=self.precision, keep_last=self.cfg.logging.keep_last,
                                  state=self.state_dict)
        if self.par.is_main:
            self._message(f"checkpoint saved: {path}")
        self.par.wait_for_main()
        self.saved_step = self.step
        return path

    def close(self) -> None:
        """Stop the data server this run started, close the transport, engine and logs."""
        if self.server is not None:
            self.server.hold()  # shutting down: a server that exits now is not restarted
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
