"""The end-of-run summary: what a run did and whether it learned, in ``summary.md`` and on the terminal.

Read from the run directory (``metrics.jsonl``, ``eval/step-*.json``, ``sft/sft_stats.json``)
plus what its caller hands in (the train samples, the task's chance rows), so it can be rebuilt for
any finished run; it knows no task:

* the evaluation before RL (right after the warm start) and after it, beside the *chance rows* the
  caller hands in: the task's :meth:`~syngrpo.perception.task.Task.chance_baselines` (scores of
  answers that need no model, in the task's main metric; REC's toy scenes: a random object of the
  image, always the train split's commonest box, the box of a random train image), with the task's
  ``chance_baseline_labels``;
* the warnings the run log raised (:mod:`syngrpo.rundir.health`: no completion parsed, no learning
  signal ...), each over all the steps it held, first in ``summary.md`` and in the verdict;
* the reward trend: mean R_total (and its parts) over the first and the last quarter of the steps, called a
  trend only when the two differ at the precision shown;
* the synthesis counts: jobs submitted, done, failed, in flight, synthesized samples in the pool;
* the time, and where the plots and the gallery are.

The last line says in words what the numbers mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.rundir.health import HealthWarning, settle
from syngrpo.rundir.runlog import read_jsonl


def quarter_means(records: Sequence[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """Mean of ``key`` over the first and over the last quarter of the step records (at least one step each)."""
    values = [float(r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key])) and int(r.get("step", 0)) > 0]
    if len(values) < 2:
        return None
    q = max(1, len(values) // 4)
    return sum(values[:q]) / q, sum(values[-q:]) / q


@dataclass
class RunSummary:
    """The numbers of :func:`summarize_run`; ``markdown()`` is ``summary.md``, ``verdict`` its last line."""

    run_dir: Path
    seconds: float
    steps: int
    headline: str | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    before_step: int | None = None
    after_step: int | None = None
    chance: dict[str, float] = field(default_factory=dict)
    #: how each chance row is named in the table (after "chance: "); a row without one prints its name
    chance_labels: dict[str, str] = field(default_factory=dict)
    rewards: dict[str, tuple[float, float]] = field(default_factory=dict)
    synthesis: dict[str, float] = field(default_factory=dict)
    warm_start: dict[str, Any] = field(default_factory=dict)
    #: the run log's health warnings (``warnings.jsonl``), each over all the steps it held
    warnings: list[HealthWarning] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """One sentence: did the warm start beat chance, did RL keep or add to it, did the reward go up."""
        h = self.headline
        parts = []
        if h and h in self.before and h in self.after:
            b, a = 100 * self.before[h], 100 * self.after[h]
            floor = max(self.chance.values(), default=None)
            if floor is not None:
                where = "above" if b > 100 * floor else "not above"
                parts.append(f"after the warm start the policy scores {h} {b:.0f} % on held-out images, {where} the "
                             f"best chance row ({100 * floor:.0f} %, a policy that does not look at the image)")
            else:
                parts.append(f"after the warm start the policy scores {h} {b:.0f} %")
            delta = a - b
            parts.append(f"RL {'added' if delta > 0 else 'changed it by'} {delta:+.0f} points (now {a:.0f} %)")
        trend = self.rewards.get("reward/total")
        if trend is not None:
            first, last = (f"{v:.2f}" for v in trend)
            if first != last:
                text = f"the mean reward went {first} -> {last} from the first to the last quarter of RL"
                notes = ["up" if trend[1] > trend[0] else "down"]
            elif trend[0] == 0.0 and trend[1] == 0.0:
                text, notes = "the mean reward was 0 in the first and the last quarter of RL", ["no reward earned"]
            else:  # equal at the precision shown: no trend to call
                text = f"the mean reward stayed at {first} from the first to the last quarter of RL"
                notes = ["no trend"]
            synth = self.rewards.get("batch/synthesized_frac")
            if synth is not None and synth[1] > synth[0]:
                notes.append(f"{100 * synth[1]:.0f} % of the last quarter's images were synthesized ones")
            parts.append(f"{text} ({'; '.join(notes)})")
        if self.warnings:  # first: a run that could not learn says so before anything it measured
            parts.insert(0, "WARNING: " + "; ".join(w.short for w in self.warnings) + " (see Warnings)")
        if not parts:
            return "No evaluation before and after RL in this run: see metrics.jsonl for the rewards."
        return "What it means: " + "; ".join(parts) + "."

    def markdown(self) -> str:
        """``summary.md``: a title, :meth:`body`, where to look, and the verdict."""
        return "\n".join([f"# Run summary: {self.run_dir}", "", self.body(), "## Where to look", "",
                          f"* plots: {self.run_dir / 'plots'}",
                          f"* gallery (original vs synthesized): {self.run_dir / 'gallery.html'}",
                          f"* evaluations: {self.run_dir / 'eval'}",
                          f"* every step: {self.run_dir / 'metrics.jsonl'}", "", self.verdict, ""])

    def body(self) -> str:
        """Time, warm start, evaluation with the chance rows, reward trend, synthesis counts (Markdown)."""
        lines = [f"{self.steps} RL steps, {self.seconds:.0f} s in all ({self.seconds / 60:.1f} min).", ""]
        if self.warnings:
            lines += ["## Warnings", "", *(f"* **WARNING** {w.message}" for w in self.warnings), ""]
        ws = self.warm_start
        if ws:
            plain = ws.get("plain") or {}
            text = (f"Warm start: {ws.get('steps', '?')} SFT steps in {ws.get('seconds', float('nan')):.0f} s"
                    if not plain else
                    f"Warm start: {plain['steps']} SFT steps in the plain format ({plain['seconds']:.0f} s) and "
                    f"{ws.get('steps', '?')} in the response format ({ws.get('seconds', float('nan')):.0f} s)")
            vision = ws.get("vision_pretrain")
            if vision:
                text += (f", after {vision['steps']} steps of vision pre-training "
                         f"({vision.get('seconds', float('nan')):.0f} s)")
            if ws.get("from"):  # a shipped warm start: made once, before this run, not part of its time
                made = text.removeprefix("Warm start: ")
                text = f"Warm start: the shipped `{ws['from']}` (made once, beforehand: {made})"
            lines += [text + ".", ""]
        if self.before or self.after:
            keys = list(dict.fromkeys([*self.before, *self.after]))
            keys = [k for k in keys if k != "n"]
            lines += ["## Evaluation (greedy, held-out split)", "",
                      "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for name, value in self.chance.items():  # in the headline metric's column
                cells = [f"{100 * value:.1f}" if k == self.headline else "" for k in keys]
                lines.append(f"| chance: {self.chance_labels.get(name, name)} | " + " | ".join(cells) + " |")
            for label, m, step in (("before RL (after the warm start)", self.before, self.before_step),
                                   ("after RL", self.after, self.after_step)):
                if m:
                    cells = [f"{100 * m[k]:.1f}" if isinstance(m.get(k), (int, float)) else "" for k in keys]
                    lines.append(f"| {label}, step {step} | " + " | ".join(cells) + " |")
            n = self.after.get("n") or self.before.get("n")
            lines += ["", f"In %; {int(n)} images." if n else "In %.", ""]
        if self.rewards:
            lines += ["## Rewards (mean over the first and the last quarter of the RL steps)", "",
                      "| reward | first quarter | last quarter |", "|---|---|---|"]
            for key, (first, last) in self.rewards.items():
                name = "share of synthesized images" if key == "batch/synthesized_frac" else key.removeprefix("reward/")
                lines.append(f"| {name} | {first:.3f} | {last:.3f} |")
            lines.append("")
        if self.synthesis:
            s = self.synthesis
            lines += ["## Synthesis", "",
                      f"{int(s.get('submitted', 0))} jobs submitted, {int(s.get('done', 0))} done, "
                      f"{int(s.get('failed', 0))} failed, {int(s.get('in_flight', 0))} in flight at the end; "
                      f"{int(s.get('in_pool', 0))} of {int(s.get('pool', 0))} training samples are synthesized "
                      "images now.", ""]
        return "\n".join(lines)


def summarize_run(run_dir: str | Path, *, seconds: float, train_samples: Sequence[Any] = (),
                  chance: Mapping[str, float] | None = None, chance_labels: Mapping[str, str] | None = None, policy: str | Path | None = None) -> RunSummary:
    """The summary of a finished run directory (see the module docstring).

    ``chance``: scores of answers that need no model, in the headline metric (the task's
    :meth:`~syngrpo.perception.task.Task.chance_baselines`), named in the table by ``chance_labels``.
    ``policy``: the directory the run started from; when the run did no warm start of its own and that
    directory holds one's ``sft_stats.json`` (a shipped warm start), that is the warm start reported."""
    run = Path(run_dir)
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "step" in r]
    steps = max((int(r["step"]) for r in records), default=0)
    summary = RunSummary(run_dir=run, seconds=seconds, steps=steps, chance=dict(chance or {}),
                         chance_labels=dict(chance_labels or {}))
    evals = sorted((run / "eval").glob("step-*.json"))
    if evals:
        first, last = (json.loads(p.read_text(encoding="utf-8")) for p in (evals[0], evals[-1]))
        if len(evals) > 1 or int(first.get("step", 0)) == 0:
            summary.before, summary.before_step = first["metrics"], int(first.get("step", 0))
        if len(evals) > 1 or int(first.get("step", 0)) > 0:
            summary.after, summary.after_step = last["metrics"], int(last.get("step", 0))
        summary.headline = next((k for k in (summary.after or summary.before)
                                 if k not in ("format", "accuracy_reward", "n")), None)
    for key in ("reward/total", "reward/accuracy", "reward/format", "reward/diversity", "batch/synthesized_frac"):
        means = quarter_means(records, key)
        if means is not None:
            summary.rewards[key] = means
    summary.warnings = settle([HealthWarning.from_dict(w) for w in read_jsonl(run / "warnings.jsonl")], records)
    last = next((r for r in reversed(records) if "synthesis/submitted_total" in r), None)
    if last is not None:
        pool = len(train_samples)
        summary.synthesis = {"submitted": last["synthesis/submitted_total"], "done": last["synthesis/done_total"],
                             "failed": last["synthesis/failed_total"], "in_flight": last["synthesis/in_flight"],
                             "pool": pool, "in_pool": round(float(last.get("pool/synthesized_fraction") or 0) * pool)}
    stats = run / "sft" / "sft_stats.json"
    shipped = policy is not None and not stats.is_file() and (Path(policy) / "sft_stats.json").is_file()
    if shipped:
        stats = Path(policy) / "sft_stats.json"  # type: ignore[arg-type]
    if stats.is_file():
        ws = json.loads(stats.read_text(encoding="utf-8"))
        summary.warm_start = {"steps": ws.get("steps"), "seconds": ws.get("seconds", float("nan")),
                              "vision_pretrain": ws.get("vision_pretrain"), "plain": ws.get("plain"),
                              "from": Path(policy).name if shipped else None}  # type: ignore[arg-type]
    return summary


def write_run_summary(summary: RunSummary) -> Path:
    """``summary.md`` in the run directory."""
    path = summary.run_dir / "summary.md"
    path.write_text(summary.markdown(), encoding="utf-8")
    return path
