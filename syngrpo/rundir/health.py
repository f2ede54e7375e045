"""Loud warnings about a run that cannot be learning, read from its step records as it goes.

A run can train for hours on nothing: no completion parses (the policy answers in another format
than the prompt asks for: the rewards that read the answer are all 0), or every group's rewards are
equal (every advantage is 0 and the policy never changes), or R_acc is flat in every group (the
collapse Syn-GRPO attacks: only R_format and R_diversity still train).  Each shows in the metrics
long before the evaluation does, and each has a likely cause worth naming.

:class:`HealthWatch` reads one step record at a time (what :meth:`syngrpo.rundir.runlog.RunLog.log`
writes to ``metrics.jsonl``) and says a :class:`HealthWarning` once a condition has held for
:data:`HEALTH_STEPS` steps in a row, or for the whole of a shorter run at its last step; the run
log writes it to ``train.log``, the terminal and ``warnings.jsonl``, and the end-of-run summary
(:mod:`syngrpo.rundir.summary`) puts ``warnings.jsonl`` at the top of ``summary.md``.  A condition
that ends and comes back is warned about again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: steps in a row a condition must hold before the run log warns (a shorter run: all of its steps)
HEALTH_STEPS = 5

#: the formats the policy may be asked for, as the prompt spells them
FORMATS = {
    "syn": "<think>…</think><score>…</score><description>…</description><answer>…</answer>",
    "plain": "<think>…</think><answer>…</answer>",
}


@dataclass(frozen=True)
class HealthWarning:
    """One condition that held from ``first_step`` to ``last_step``: ``short`` for a verdict, ``message`` in full.

    ``response_format`` is the format the run asked for (named in the message), kept so that the summary
    can say the same once it knows how long the condition lasted (:func:`settle`).
    """

    kind: str
    first_step: int
    last_step: int
    short: str
    message: str
    response_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HealthWarning:
        fmt = d.get("response_format")
        return cls(kind=str(d["kind"]), first_step=int(d["first_step"]), last_step=int(d["last_step"]),
                   short=str(d["short"]), message=str(d["message"]), response_format=None if fmt is None else str(fmt))


def _number(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _no_parse(r: Mapping[str, Any]) -> bool | None:
    parsed = _number(r, "completion/parsed_frac")
    return None if parsed is None else parsed == 0.0


def _no_signal(r: Mapping[str, Any]) -> bool | None:
    flat = _number(r, "reward/zero_variance_groups_total")
    return None if flat is None else flat >= 1.0


def _no_accuracy_signal(r: Mapping[str, Any]) -> bool | None:
    # R_acc flat in every group while the totals still differ (when they do not, `no_signal` says more)
    flat_acc, flat_total = _number(r, "diversity/zero_variance_groups"), _number(r, "reward/zero_variance_groups_total")
    if flat_acc is None or flat_total is None:
        return None
    return flat_acc >= 1.0 and flat_total < 1.0


#: kind -> whether a step record shows it (None: the record cannot tell)
CHECKS: dict[str, Callable[[Mapping[str, Any]], bool | None]] = {
    "no_parse": _no_parse,
    "no_signal": _no_signal,
    "no_accuracy_signal": _no_accuracy_signal,
}


def _mean(records: list[Mapping[str, Any]], key: str) -> float | None:
    values = [v for v in (_number(r, key) for r in records) if v is not None]
    return sum(values) / len(values) if values else None


def _span(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def describe(kind: str, records: list[Mapping[str, Any]], *, response_format: str | None) -> tuple[str, str]:
    """(short, message) of a condition that held over ``records`` (consecutive steps), naming its likely cause."""
    first, last = int(records[0]["step"]), int(records[-1]["step"])
    span = _span(first, last)
    asked = (f"`{response_format}`: {FORMATS[response_format]}" if response_format in FORMATS
             else "the format rollout.response_format names")
    truncated = _mean(records, "completion/truncated_frac") or 0.0
    cut = (f" Also {100 * truncated:.0f} % of the completions stopped at rollout.max_new_tokens: an answer that "
           "comes after the cut is lost; raise it." if truncated >= 0.5 else "")
    if kind == "no_parse":
        short = f"no completion parsed in {span}"
        return short, (
            f"{short}: not one completion had the <answer> the prompt asks for, so every reward that reads the "
            "answer is 0 and the policy learns nothing. Likely cause: the policy answers in another response "
            f"format than the prompt asks for (this run asks for {asked}); a policy warm-started in one format "
            "writes garbage when prompted for the other (the shipped warm start writes the `syn` format). Set "
            "rollout.response_format to the format the policy was trained in, or warm-start it in this one "
            "(sft.enabled: true). samples.jsonl shows what it writes." + cut)
    if kind == "no_signal":
        total = _mean(records, "reward/total")
        short = f"no learning signal in {span} (every group's rewards were equal)"
        if total == 0.0:
            parsed = _mean(records, "completion/parsed_frac")
            why = (" Every reward was 0 and no completion parsed: see the response-format warning." if parsed == 0.0
                   else " Every reward was 0: no completion earned any reward term; check that the rewards can "
                        "score what the policy writes (samples.jsonl).")
        else:
            why = (f" The rewards (mean {total:.3g}) do not tell the completions of a prompt apart: a policy that "
                   "writes the same answer every time (raise rollout.temperature), or rewards too coarse for the "
                   "task.")
        grad = _mean(records, "grad_norm")
        moved = "" if grad is None else f" (mean gradient norm {grad:.3g})"
        return short, (f"{short}: within every group all completions got the same reward, so every advantage "
                       f"is 0 and the update did not change the policy{moved}.{why}{cut}")
    if kind == "no_accuracy_signal":
        acc = _mean(records, "accuracy")
        short = f"R_acc carried no signal in {span} (equal within every group)"
        if acc == 0.0:
            why = (" No completion was right: the task is beyond the policy as it is (or its answers do not "
                   "parse into the task's answer).")
        elif acc == 1.0:
            why = (" Every completion was right: these images are too easy to learn from, the collapse "
                   "Syn-GRPO's harder synthesized images are for.")
        else:
            why = f" Mean R_acc {acc:.3g}: each prompt is always right or always wrong."
        return short, (f"{short}: only the other reward terms (R_format, R_diversity ...) trained the policy; "
                       f"its answers themselves got no advantage.{why}")
    raise ValueError(f"unknown health condition {kind!r}")


class HealthWatch:
    """Reads step records in order and returns each :class:`HealthWarning` once, when it becomes true.

    ``total_steps`` (the run's last step) lets a run shorter than ``steps`` warn at its end about a
    condition that held from its first step on; ``response_format`` (``syn``/``plain``) is named in the
    response-format warning.
    """

    def __init__(self, *, steps: int = HEALTH_STEPS, total_steps: int | None = None,
                 response_format: str | None = None) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.steps = steps
        self.total_steps = total_steps
        self.response_format = response_format
        self._first_step: int | None = None
        self._streaks: dict[str, list[Mapping[str, Any]]] = {k: [] for k in CHECKS}
        self._raised: set[str] = set()

    def update(self, record: Mapping[str, Any]) -> list[HealthWarning]:
        """Take the next step's record (with its ``step``); the warnings that start holding at it."""
        step = int(record.get("step", 0))
        if step <= 0:  # the evaluation before RL, not a training step
            return []
        if self._first_step is None:
            self._first_step = step
        out = []
        for kind, check in CHECKS.items():
            streak = self._streaks[kind]
            if not check(record):
                streak.clear()
                self._raised.discard(kind)
                continue
            streak.append(record)
            whole_run = (self.total_steps is not None and step >= self.total_steps
                         and int(streak[0]["step"]) == self._first_step)
            if kind not in self._raised and (len(streak) >= self.steps or whole_run):
                self._raised.add(kind)
                short, message = describe(kind, streak, response_format=self.response_format)
                out.append(HealthWarning(kind, int(streak[0]["step"]), step, short, message, self.response_format))
        return out


def settle(warnings: list[HealthWarning], records: list[Mapping[str, Any]]) -> list[HealthWarning]:
    """``warnings`` (as the run log raised them) described again over all the steps each condition held.

    The run log warns as soon as a condition has held long enough; ``records`` (the run's step
    records) say how long it went on after that.  A warning whose first step has no record is kept as raised.
    """
    by_step = sorted((r for r in records if int(r.get("step", 0)) > 0), key=lambda r: int(r["step"]))
    out = []
    for w in warnings:
        start = next((n for n, r in enumerate(by_step) if int(r["step"]) == w.first_step), None)
        if start is None or w.kind not in CHECKS:
            out.append(w)
            continue
        streak = []
        for r in by_step[start:]:
            if not CHECKS[w.kind](r):
                break
            streak.append(r)
        if not streak:
            out.append(w)
            continue
        short, message = describe(w.kind, streak, response_format=w.response_format)
        out.append(HealthWarning(w.kind, w.first_step, int(streak[-1]["step"]), short, message, w.response_format))
    return out
