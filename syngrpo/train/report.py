"""What a training step reports: its metrics (``metrics.jsonl``), its sample records (``samples.jsonl``), the gallery.

The metrics are what the paper plots (reward parts, entropy H(q), diversity V(q) and its smoothed
value, the diversity reward with and without smoothing for Fig. 7) and what an operator needs
(loss terms, gradient norm, completion lengths, the data server's health and queue, time and memory
per phase).  docs/training.md lists every key.  Under ``torchrun`` they are means over ranks, except
the data server's, the pool's and the schedule's, which are rank 0's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syngrpo.algo.diversity import DiversitySmoother
from syngrpo.algo.dynamic_sampling import SamplingReport
from syngrpo.data.pool import DataPool
from syngrpo.models.rollout import Rollout
from syngrpo.rundir.runlog import RunLog
from syngrpo.synthesis.client import Replacement, StepSynthesis, SynthesisClient
from syngrpo.train.evaluate import EvalResult
from syngrpo.train.rewards import StepRewards
from syngrpo.train.update import UpdateStats
from syngrpo.types import ParsedResponse, Sample

#: metric prefixes and keys that are rank 0's under torchrun (the others are averaged over ranks)
MAIN_ONLY = ("synthesis/", "pool/", "epoch", "progress", "lr")


@dataclass
class StepRecord:
    """Everything a step produced that its report reads (one per rank under ``torchrun``)."""

    samples: list[Sample]
    epoch: int
    rollout: Rollout
    parsed: list[ParsedResponse]
    rewards: StepRewards
    advantages: Any  # (B*G,) tensor
    update: UpdateStats
    synthesis: StepSynthesis
    #: per prompt, the index of the response whose description was sent (eq. 8), or None
    chosen: list[int | None]
    #: wall time of the rollout and of the update, seconds
    seconds: dict[str, float]
    #: per-phase CUDA memory peaks (:class:`~syngrpo.scale.memory.PhasePeaks`; empty on a CPU)
    peaks: dict[str, float]
    #: what dynamic sampling did (:class:`~syngrpo.algo.dynamic_sampling.SamplingReport`), when it is on
    sampling: SamplingReport | None = None


def step_metrics(rec: StepRecord, *, lr: float, pool: DataPool, smoother: DiversitySmoother, syn_mode: bool,
                 synthesis_on: bool, client: SynthesisClient | None) -> dict[str, Any]:
    """The step's metrics (this rank's; :meth:`~syngrpo.scale.parallel.Parallel.mean_metrics` averages them)."""
    r, u, syn = rec.rewards, rec.update, rec.synthesis
    B, n = len(rec.samples), len(r.totals)
    lengths = rec.rollout.completion_mask.sum(-1).float()
    truncated = rec.rollout.truncated
    metrics: dict[str, Any] = {
        "epoch": rec.epoch,
        "progress": pool.progress,
        "lr": lr,
        "reward/total": sum(r.totals) / n,
        **{f"reward/{name}": sum(vals) / n for name, vals in r.parts.items()},
        "accuracy": sum(r.accuracy) / n,
        "diversity/v_mean": sum(r.v) / B,
        # groups whose R_acc has no spread (V(q) = 0: the collapse Syn-GRPO attacks); the total's
        # spread is kept apart, since R_diversity differs per rollout by construction
        "diversity/zero_variance_groups": sum(1 for g in r.accuracy_groups() if max(g) == min(g)) / B,
        "reward/zero_variance_groups_total": float((r.matrix.std(dim=1) == 0).float().mean()),
        "entropy": u.entropy,
        "loss": u.stats.get("loss", float("nan")),
        "policy_loss": u.stats.get("policy_loss", float("nan")),
        "kl": u.stats.get("kl", 0.0),
        "clip_frac": u.stats.get("clip_frac", 0.0),
        "grad_norm": u.grad_norm,
        "completion/mean_length": float(lengths.mean()),
        "completion/max_length": float(lengths.max()),
        # completions with the <answer> the prompt asks for: 0 for steps on end is the run log's loudest warning
        "completion/parsed_frac": sum(1 for p in rec.parsed if p.answer is not None) / n,
        "completion/truncated_frac": float(truncated.float().mean()) if truncated is not None else 0.0,
        "batch/synthesized_frac": sum(1 for s in rec.samples if s.generation > 0) / B,
        "time/rollout": rec.seconds["rollout"],
        "time/update": rec.seconds["update"],
    }
    metrics.update(rec.peaks)
    if rec.sampling is not None:  # dynamic/*: tries, prompts drawn, groups dropped / surplus / filled
        metrics.update(rec.sampling.metrics())
    if u.engine_gap is not None:
        metrics["logprob/engine_max_abs_diff"] = u.engine_gap
    metrics.update(u.correction)  # rollout_is/*: the rollout correction's weights, when it is on
    # the policy losses' own stats: the entropy baselines', Clip-Cov's and KL-Cov's (docs/training.md)
    for k in ("entropy_bonus", "entropy_advantage", "cov_clip_frac", "kl_cov_frac"):
        if k in u.stats:
            metrics[k] = u.stats[k]
    if syn_mode:
        scores = [p.score for p in rec.parsed if p.score is not None]
        metrics.update({
            "diversity/smoothed_mean": sum(r.v_smoothed) / B,
            "diversity/global_avg": smoother.global_avg,
            "diversity/predicted_mean": sum(scores) / len(scores) if scores else None,
            "reward/diversity_raw": sum(x for g in r.diversity for x in g) / n,
            "reward/diversity_unsmoothed": sum(r.diversity_unsmoothed) / n,
        })
    if synthesis_on:
        c = pool.counters
        metrics.update({
            "synthesis/submitted": syn.submitted,
            "synthesis/done": syn.done,
            "synthesis/failed": syn.failed,
            "synthesis/stale": syn.stale,
            "synthesis/expired": syn.expired,
            "synthesis/skipped_busy": syn.skipped_busy,
            "synthesis/skipped_server_down": syn.skipped_down,
            "synthesis/in_flight": len(pool.in_flight),
            "synthesis/submitted_total": c.submitted,
            "synthesis/done_total": c.done,
            "synthesis/failed_total": c.failed + c.expired,
            "synthesis/server_healthy": 1.0 if client is None or client.healthy else 0.0,
            "synthesis/server_restarts": client.server_restarts if client is not None else 0,
            "synthesis/wait_seconds": syn.wait_seconds,
            "pool/synthesized_fraction": pool.synthesized_fraction(),
        })
    return metrics


def sample_records(rec: StepRecord, limit: int) -> list[dict[str, Any]]:
    """``samples.jsonl`` records of the step's first ``limit`` prompts: every completion with its
    ``<score>``, reward parts, reward and advantage, the group's V(q) and Ṽ(q), and which description was sent."""
    G, r = rec.rewards.group_size, rec.rewards
    out = []
    for b in range(min(len(rec.samples), limit)):
        s = rec.samples[b]
        out.append({
            "sample_id": s.id,
            "image": s.image,
            **({"images": list(s.images), "box_image": s.box_image} if s.other_images else {}),
            "generation": s.generation,
            "problem": s.problem,
            "v": r.v[b],
            "v_smoothed": r.v_smoothed[b],
            "selected": rec.chosen[b],
            "completions": [
                {"text": rec.rollout.texts[b * G + i], "score": rec.parsed[b * G + i].score,
                 "reward": r.totals[b * G + i], "advantage": float(rec.advantages[b * G + i]),
                 **{name: vals[b * G + i] for name, vals in r.parts.items()}}
                for i in range(G)
            ],
        })
    return out


def log_step(runlog: RunLog, step: int, metrics: dict[str, Any], samples: list[dict[str, Any]],
             replacements: list[Replacement], pool: DataPool, *, samples_every: int, epoch_ended: bool) -> None:
    """Rank 0 writes the step: its metrics, every ``samples_every`` steps its sample records, the synthesized
    images that entered the pool into the gallery, and the gallery and plots again when an epoch ended."""
    runlog.log(step, metrics)
    if samples_every and step % samples_every == 0 and samples:
        runlog.samples(step, samples)
    for rep in replacements:
        runlog.gallery_add(step=step, epoch=rep.job.epoch, origin_id=rep.job.origin_id,
                           original=pool.original(rep.job.origin_id).image, synthesized=rep.sample.image,
                           description=rep.sample.description or "", generation=rep.sample.generation,
                           key=rep.job.key)
    if epoch_ended:
        runlog.write_gallery()
        runlog.write_plots()


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """An evaluation as ``eval/<metric>`` keys of the step's metrics, with ``eval/score`` its headline."""
    out = {f"eval/{k}": v for k, v in result.metrics.items()}
    head = result.headline
    if head is not None:
        out["eval/score"] = head[1]
    return out
