"""DAPO's dynamic sampling: only groups whose rollouts disagree train; the batch is refilled from more prompts.

A group whose G rollouts all score the same has advantage 0 everywhere (eq. 1): it adds nothing but the KL
term, and a batch full of them is the "zero-loss step" Syn-GRPO attacks by changing the images.  DAPO (Yu et
al. 2025) attacks it by sampling: keep only prompts with ``0 < #correct < G`` and draw more prompts until the
batch is full.  The peers read it the same way, with differences this module fixes as follows:

* **what must vary**: DAPO counts correct answers; verl's ``filter_groups.metric`` names a per-rollout value
  (its DAPO recipe: ``acc``) and keeps groups whose population std is > 0; EasyR1's ``online_filtering`` keeps
  groups whose *mean* ``overall`` reward lies in (0.01, 0.99).  syngrpo keeps a group when the values of
  ``metric`` are not all equal: ``accuracy`` (R_acc, the default: DAPO's and verl's recipe's rule; the same
  spread V(q) measures, eq. 4) or ``reward`` (the sum of the reward terms, verl's ``seq_reward``).  R_diversity
  is left out: it differs per rollout by construction and is computed on the batch that trains.
* **how the batch keeps its size**: kept groups are gathered in draw order and the surplus of the last draw is
  dropped (verl's ``batch[:train_batch_size * n]``).  verl and EasyR1 draw a whole generation batch each time;
  syngrpo draws what is missing divided by the share of groups kept so far (never more than a batch, so a
  refill never needs more memory than a step without dynamic sampling).
* **at the cap** (``max_tries`` rollouts, the first included): verl and EasyR1 stop the run with an error;
  syngrpo's default ``at_cap: fill`` completes the batch with dropped groups (they train as in plain GRPO)
  and logs how many, ``at_cap: error`` stops as the peers do.

The functions here are the rules, on plain numbers; :mod:`syngrpo.train.rollouts` runs them over rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def groups_with_signal(values: Sequence[float], group_size: int) -> list[bool]:
    """Per group of ``group_size`` consecutive values: True when they are not all equal (the group trains)."""
    if group_size < 1 or len(values) % group_size:
        raise ValueError(f"{len(values)} values do not split into groups of {group_size}")
    groups = [values[i:i + group_size] for i in range(0, len(values), group_size)]
    return [max(g) != min(g) for g in groups]


def refill_size(missing: int, kept: int, drawn: int, batch_size: int) -> int:
    """How many prompts to draw next for ``missing`` more groups with signal.

    ``kept`` of the ``drawn`` groups so far had signal: draw ``missing / (kept / drawn)`` (rounded up), at least
    ``missing`` and at most ``batch_size``; a batch when nothing was kept yet.
    """
    if missing <= 0:
        return 0
    if kept <= 0 or drawn <= 0:
        return batch_size
    return max(missing, min(batch_size, math.ceil(missing * drawn / kept)))


@dataclass
class SamplingReport:
    """What dynamic sampling did in one step (global counts: every rank's groups)."""

    #: rollouts run this step, the first included
    tries: int = 1
    #: prompts rolled out this step
    prompts_drawn: int = 0
    #: groups dropped because ``metric`` did not vary within them
    groups_dropped: int = 0
    #: groups with signal left over when the batch was full (the last draw's surplus)
    groups_surplus: int = 0
    #: dropped groups put back at the cap (``at_cap: fill``) so the batch kept its size
    groups_filled: int = 0

    def metrics(self) -> dict[str, float]:
        """The step's ``dynamic/*`` metrics (docs/training.md)."""
        drawn = max(self.prompts_drawn, 1)
        return {"dynamic/tries": float(self.tries), "dynamic/prompts_drawn": float(self.prompts_drawn),
                "dynamic/groups_dropped": float(self.groups_dropped),
                "dynamic/zero_variance_frac": self.groups_dropped / drawn,
                "dynamic/groups_surplus": float(self.groups_surplus),
                "dynamic/groups_filled": float(self.groups_filled)}
