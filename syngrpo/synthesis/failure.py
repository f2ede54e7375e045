"""When synthesis is failing, and a run that synthesised too little: ``synthesis.on_failure``.

Synthesis that never works is a misconfigured run, not bad luck, and Syn-GRPO without synthesis is
plain GRPO: a run must not end with exit status 0 as if it had been Syn-GRPO.  Two rules, both
stopping the run with :class:`SynthesisFailure` (``on_failure: stop``) or warning loudly in its log
and on stderr (``on_failure: warn``):

* **during the run** (:meth:`FailurePolicy.step`): the server has been down, or every job that
  finished has failed, for ``max_failed_steps`` steps in a row (and at least ``failure_grace_s``
  seconds); a token the server refuses, at once;
* **at the end of the run** (:meth:`FailurePolicy.finish`, after the last checkpoint is on disk): no
  job sent came back done, or the share of finished jobs that came back done is below
  ``min_done_share``.  A short run never reaches the first rule: a 6-step run whose 20 jobs all
  failed ended with status 0 before (issue #24).

Either way the reasons are named: the first job failure of each kind goes into the run log as it
happens, and the end-of-run verdict lists the commonest ones with their counts.  A run whose policy
wrote no usable description sent nothing: that is said loudly too, but it is not a synthesis failure
(the warm start is what to fix), so it never changes the exit status.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from syngrpo.config import SynthesisConfig
from syngrpo.errors import SyngrpoError

log = logging.getLogger(__name__)

#: distinct failure reasons said in the run log as they first happen (the rest are counted)
MAX_REASONS_SAID = 5


class SynthesisFailure(SyngrpoError):
    """Synthesis has not worked (for too long, or over the whole run), or the token was refused, and
    ``on_failure`` is ``stop``."""


class FailurePolicy:
    """The failure rules of the module doc for one run's :class:`~syngrpo.synthesis.client.SynthesisClient`."""

    def __init__(self, cfg: SynthesisConfig, message: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.message = message
        self.clock = clock
        self.bad_steps = 0  # steps in a row in which synthesis was down or every finished job failed
        self._bad_since: float | None = None
        self._warned = False
        #: why jobs failed over the run ("rejected: 422 invalid_key: ...") -> how many
        self.reasons: Counter[str] = Counter()

    def note(self, errors: Sequence[str]) -> None:
        """Count a step's job errors (``"<sample>: <why>"``) by reason; say each new reason once, as it happens."""
        for error in errors:
            reason = error.partition(": ")[2] or error
            if reason not in self.reasons and len(self.reasons) < MAX_REASONS_SAID:
                self.message(f"synthesis job failed: {error} (the first of its kind; the end of the run counts them)")
            self.reasons[reason] += 1

    def step(self, report: Any, *, down: bool, unauthorized: str | None) -> None:
        """End of a step: stop or warn if synthesis keeps failing (the first rule of the module doc)."""
        self.note(report.errors)
        if unauthorized is not None:
            self.fail(f"the data server refused this run's token: {unauthorized}")
            return
        finished_bad = report.failed + report.expired
        if report.done > 0:
            if self._warned:
                self.message(f"synthesis works again after {self.bad_steps} failed step(s)")
            self.bad_steps, self._bad_since, self._warned = 0, None, False
            return
        if not down and finished_bad == 0:
            return  # nothing finished yet (async) or nothing was sent: neither good nor bad news
        now = self.clock()
        if self._bad_since is None:
            self._bad_since = now
        self.bad_steps += 1
        if self.bad_steps < self.cfg.max_failed_steps or now - self._bad_since < self.cfg.failure_grace_s:
            return
        if down:
            why = "the data server has been unavailable"
        else:
            last = "; ".join(report.errors[:3]) or "no error text"
            why = f"every synthesis job that finished has failed (last: {last})"
        text = f"{why} for {self.bad_steps} steps ({now - self._bad_since:.0f} s)"
        if self.cfg.on_failure == "warn" and self.bad_steps % self.cfg.max_failed_steps:
            return  # warn again every max_failed_steps steps, not at every step
        self.fail(text)

    def finish(self, counters: Any, in_flight: int) -> None:
        """End of the run (the second rule of the module doc), from the pool's run-long counters."""
        submitted, done = int(counters.submitted), int(counters.done)
        finished = done + int(counters.failed) + int(counters.expired)
        if submitted == 0:
            text = ("synthesis never ran: the policy wrote no usable <description> in the whole run, so no image "
                    "was synthesized and this was plain GRPO. Warm-start the policy on the response format "
                    "(sft.enabled) or check rollout.max_new_tokens")
            log.warning("SYNTHESIS NEVER RAN: %s", text)
            self.message(f"WARNING: {text}")
            return
        share = done / finished if finished else 0.0
        if done > 0 and share >= self.cfg.min_done_share:
            return
        common = "; ".join(f"{n} x {why}" for why, n in self.reasons.most_common(3)) or "no job came back failed"
        left = f", {in_flight} still in flight at the end" if in_flight else ""
        self.fail(f"synthesis produced {done} of {submitted} jobs sent ({finished} finished{left}; "
                  f"{share:.0%} of those done, below synthesis.min_done_share {self.cfg.min_done_share:.0%}). "
                  f"Commonest reasons: {common}", at_end=True)

    def fail(self, text: str, *, at_end: bool = False) -> None:
        if self.cfg.on_failure == "stop":
            self.message(f"stopping: {text}" if not at_end else f"the run failed: {text}")
            raise SynthesisFailure(f"{text}. Fix the data server or its options, or set synthesis.on_failure: "
                                   "warn to train on without synthesis"
                                   + (" (the last checkpoint is saved)" if at_end else ""))
        self._warned = True
        if at_end:
            log.warning("SYNTHESIS FAILED IN THIS RUN: %s (synthesis.on_failure: warn)", text)
            self.message(f"WARNING: synthesis failed in this run: {text}")
            return
        log.warning("SYNTHESIS IS FAILING: %s; training goes on without it (synthesis.on_failure: warn)", text)
        self.message(f"WARNING: synthesis is failing: {text}; training goes on without it")
