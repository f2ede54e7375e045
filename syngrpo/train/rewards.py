"""Steps 4 and 7 of the trainer: the reward of each rollout, r_i = R_acc + R_format + ... + R_diversity (eq. 7),
and the description each group sends to the data server (eq. 8).

The per-response terms are the registered reward plugins of ``rewards.terms`` (R_acc, R_format, your
own), each weighted.  R_diversity (eq. 6) needs the whole group: the group's measured diversity V(q)
(eq. 4, the spread of R_acc), smoothed over the global batch against the moving average of past
batches (§3.3.2), compared with what each response predicted in its ``<score>``.  The maths is in
:mod:`syngrpo.algo.diversity` (plain floats, unit-tested against hand values); this module wires it
to the reward plugins and, under ``torchrun``, to every rank's groups.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from syngrpo.algo.diversity import DiversitySmoother, diversity_reward, ground_truth_diversity, select_description
from syngrpo.scale.parallel import Parallel
from syngrpo.types import ParsedResponse, Sample


@dataclass
class StepRewards:
    """The rewards of one step's B x G rollouts (rows prompt-major: p0 x G, p1 x G, ...)."""

    group_size: int
    #: each weighted term of eq. 7 per row, R_diversity (``diversity``) included in ``syn`` mode
    parts: dict[str, list[float]]
    #: R_acc per row, unweighted (V(q) is its spread, also when accuracy is not a reward term)
    accuracy: list[float]
    #: r_i per row (eq. 7): the sum of ``parts``
    totals: list[float]
    #: V(q) per prompt (eq. 4, normalised to [0, 1])
    v: list[float]
    #: Ṽ(q) per prompt: V(q) after diversity smoothing (``v`` itself outside ``syn`` mode)
    v_smoothed: list[float]
    #: R_diversity per prompt and response (eq. 6), unweighted; zeros outside ``syn`` mode
    diversity: list[list[float]] = field(default_factory=list)
    #: R_diversity against the unsmoothed V(q) (eq. 5) per row, for paper Fig. 7
    diversity_unsmoothed: list[float] = field(default_factory=list)

    @property
    def matrix(self) -> torch.Tensor:
        """The totals as a (B, G) float32 tensor: what the advantage estimator takes."""
        return torch.tensor(self.totals, dtype=torch.float32).view(-1, self.group_size)

    def accuracy_groups(self) -> list[list[float]]:
        """R_acc per prompt, G values each."""
        G = self.group_size
        return [self.accuracy[b * G:(b + 1) * G] for b in range(len(self.accuracy) // G)]


class RewardScorer:
    """Scores a step's parsed rollouts: the registered terms, then R_diversity (eqs. 4-7).

    ``terms`` are ``(term config, reward function)`` pairs (:func:`syngrpo.train.components.build_rewards`);
    ``accuracy_fn`` scores R_acc when it is not one of them.  ``diversity_weight`` weights R_diversity,
    which only ``syn`` responses (those with a ``<score>``) get.
    """

    def __init__(self, terms: Sequence[tuple[Any, Callable[..., Sequence[float]]]],
                 accuracy_fn: Callable[..., Sequence[float]] | None, *, diversity_weight: float, syn_mode: bool,
                 smoother: DiversitySmoother, par: Parallel) -> None:
        self.terms = list(terms)
        self.accuracy_fn = accuracy_fn
        self.diversity_weight = diversity_weight
        self.syn_mode = syn_mode
        self.smoother = smoother
        self.par = par

    def __call__(self, parsed: Sequence[ParsedResponse], samples: Sequence[Sample], frames: Sequence[Any], *,
                 task: Any, group_size: int) -> StepRewards:
        """Rewards of rows ``parsed`` (``samples``/``frames``: each row's sample and model-input frame)."""
        G, rows = group_size, len(parsed)
        B = rows // G
        parts: dict[str, list[float]] = {}
        raw: dict[str, list[float]] = {}
        for term, fn in self.terms:
            raw[term.key] = [float(v) for v in fn(parsed, samples, task=task, frames=frames)]
            parts[term.key] = [term.weight * v for v in raw[term.key]]
        # V(q) is the spread of R_acc (eq. 4), needed even when accuracy is not a reward term
        acc = raw["accuracy"] if "accuracy" in raw else self.accuracy_fn(parsed, samples, task=task, frames=frames)
        v_raw = [ground_truth_diversity(acc[b * G:(b + 1) * G]) for b in range(B)]  # V(q), eq. 4 (normalised)
        div_groups: list[list[float]] = [[0.0] * G for _ in range(B)]
        div_unsmoothed: list[float] = []
        v_smooth: list[float] = list(v_raw)
        if self.syn_mode:
            # Ṽ(q), diversity smoothing over the global batch (every rank's groups)
            v_global = [v for part in self.par.gather(v_raw) for v in part]
            v_smooth = self.par.my_slice(self.smoother.update(v_global))
            for b in range(B):
                scores = [parsed[b * G + i].score for i in range(G)]
                div_groups[b] = [diversity_reward(s, v_smooth[b]) for s in scores]  # eq. 6
                div_unsmoothed += [diversity_reward(s, v_raw[b]) for s in scores]  # eq. 5, for Fig. 7
            parts["diversity"] = [self.diversity_weight * r for g in div_groups for r in g]
        totals = [sum(p[n] for p in parts.values()) for n in range(rows)]  # eq. 7
        return StepRewards(group_size=G, parts=parts, accuracy=list(acc), totals=totals, v=v_raw,
                           v_smoothed=v_smooth, diversity=div_groups, diversity_unsmoothed=div_unsmoothed)


def select_descriptions(parsed: Sequence[ParsedResponse], rewards: StepRewards, *,
                        rng: random.Random | None = None) -> list[int | None]:
    """Eq. 8 over a step: per prompt, the response whose description goes to the data server.

    i* = argmax_i R_diversity(o_i), the best-calibrated response; with ``rng`` (the ``random`` ablation)
    every usable description ties and one is drawn.  ``None`` where no response has a usable description.
    """
    G = rewards.group_size
    chosen: list[int | None] = []
    for b in range(len(parsed) // G):
        descriptions = [parsed[b * G + i].description for i in range(G)]
        scores = [0.0] * G if rng is not None else rewards.diversity[b]
        chosen.append(select_description(descriptions, scores, rng=rng))
    return chosen
