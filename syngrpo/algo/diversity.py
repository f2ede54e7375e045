"""The diversity side of Syn-GRPO: measured diversity, its smoothing, its reward, description choice.

Paper §3.2-3.3 (eqs. 4-8).  For every prompt q with G rollouts:

* V(q): how much the G accuracy rewards disagree (eq. 4), normalised to [0, 1];
* Ṽ(q): V(q) rescaled so that the batch average follows a moving average of past
  batches (diversity smoothing, against the "diversity drift" of §3.3.2);
* R_diversity(o_i) = 1 - |v_i - Ṽ(q)| for the diversity v_i that rollout i predicted (eq. 6);
* i* = argmax_i R_diversity(o_i): whose description goes to the data server (eq. 8).

R_diversity needs the whole group (V(q) is a group statistic), which is why it
lives here and not among the per-response :mod:`syngrpo.perception.rewards` plugins.
Everything here is plain Python floats: no torch.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

#: the largest population variance of values in [0, 1] (half of them 0, half 1): eq. 4's normaliser
VARIANCE_BOUND = 0.25

#: descriptions longer than this (after stripping) are not sent for synthesis
MAX_DESCRIPTION_CHARS = 500


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"{what} must be finite numbers, got {v!r}")
    return out


def ground_truth_diversity(acc_rewards: Sequence[float]) -> float:
    """V(q) of eq. 4, normalised: population variance of the group's R_acc divided by 1/4, clipped to [0, 1].

    Accuracy rewards lie in [0, 1], where the population variance is at most 1/4
    (paper appendix §1), so dividing by 1/4 maps V(q) onto [0, 1].  The clip only
    matters for rewards outside [0, 1].  A group of fewer than two rewards has no
    spread: V = 0, and identical rewards give exactly 0.  Non-finite rewards raise
    ``ValueError`` (a bug upstream: reward functions return finite values).
    """
    values = _finite(acc_rewards, "accuracy rewards")
    if len(values) < 2:
        return 0.0
    # statistics.pvariance works in exact fractions: identical rewards give exactly 0, not 1e-32.
    return _clip01(statistics.pvariance(values) / VARIANCE_BOUND)


class DiversitySmoother:
    """Diversity smoothing of §3.3.2 (the paper's smooth weight β; called γ in its experiments, 0.7).

    At step k, with V̄_k the mean V(q) over the batch::

        G_1 = V̄_1                                  (first step)
        G_k = γ · G_{k-1} + (1 - γ) · V̄_k          (later steps)
        Ṽ(q) = clip(V(q) · G_k / V̄_k, 0, 1)

    so the batch's diversities are rescaled to follow the moving average G_k of
    past batches.

    Zero batch diversity (V̄_k = 0): then every V(q) of the batch is 0 and the
    ratio is 0/0.  We return Ṽ(q) = 0 for all q, the measured value: no rollout
    group disagreed, so no prediction above 0 is rewarded, and G_k still takes
    the 0 into its average.

    ``enabled=False`` (the "w/o smoothing" ablation, Figure 7) returns the raw V(q)
    (clipped to [0, 1]) while still tracking G_k, so both runs log the same numbers.

    An empty batch returns ``[]`` and leaves the state unchanged.  The state
    (``state_dict``) is JSON-serialisable and goes into checkpoints.
    """

    def __init__(self, gamma: float = 0.7, *, enabled: bool = True) -> None:
        gamma = float(gamma)
        if not 0.0 <= gamma <= 1.0 or not math.isfinite(gamma):
            raise ValueError(f"diversity smoothing weight gamma must be in [0, 1], got {gamma!r}")
        self.gamma = gamma
        self.enabled = bool(enabled)
        self.step = 0  # number of non-empty batches seen
        self.global_avg: float | None = None  # G_k after the last update
        self.last: dict[str, float] = {}  # numbers of the last update, for logging

    def update(self, batch_diversities: Sequence[float]) -> list[float]:
        """Advance one training step with the batch's V(q) values; return Ṽ(q) for each, in order."""
        raw = [_clip01(v) for v in _finite(batch_diversities, "batch diversities")]
        if not raw:
            return []
        batch_avg = sum(raw) / len(raw)
        if self.global_avg is None:
            global_avg = batch_avg  # G_1 = V̄_1
        else:
            global_avg = self.gamma * self.global_avg + (1.0 - self.gamma) * batch_avg
        if not self.enabled:
            smoothed = list(raw)
            ratio = 1.0
        elif batch_avg <= 0.0:
            smoothed = [0.0] * len(raw)  # documented above: V̄_k = 0 gives Ṽ = 0
            ratio = 1.0
        else:
            ratio = global_avg / batch_avg
            smoothed = [_clip01(v * ratio) for v in raw]
        self.global_avg = global_avg
        self.step += 1
        self.last = {
            "batch_avg": batch_avg,
            "global_avg": global_avg,
            "ratio": ratio,
            "smoothed_avg": sum(smoothed) / len(smoothed),
            "batch_size": float(len(raw)),
        }
        return smoothed

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs, as JSON-serialisable values."""
        return {
            "gamma": self.gamma,
            "enabled": self.enabled,
            "step": self.step,
            "global_avg": self.global_avg,
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (a resumed run continues the same average)."""
        missing = {"gamma", "step", "global_avg"} - set(state)
        if missing:
            raise ValueError(f"diversity smoother state lacks {sorted(missing)}")
        gamma = float(state["gamma"])
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"diversity smoother state has gamma {gamma!r} outside [0, 1]")
        self.gamma = gamma
        self.enabled = bool(state.get("enabled", True))
        self.step = int(state["step"])
        g = state["global_avg"]
        self.global_avg = None if g is None else float(g)
        self.last = {str(k): float(v) for k, v in dict(state.get("last") or {}).items()}


def diversity_reward(predicted: float | None, target: float) -> float:
    """R_diversity of eqs. 5-6: ``1 - |v_i - Ṽ(q)|``, in [0, 1].

    ``predicted`` is the parsed ``<score>`` v_i; ``None`` or a non-finite value
    (no usable score) earns 0.  Both values are clipped to [0, 1] first, so the
    reward stays in [0, 1].  A non-finite ``target`` raises ``ValueError``.
    """
    target = float(target)
    if not math.isfinite(target):
        raise ValueError(f"target diversity must be finite, got {target!r}")
    if predicted is None:
        return 0.0
    try:
        v = float(predicted)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(v):
        return 0.0
    return 1.0 - abs(_clip01(v) - _clip01(target))


def usable_description(description: str | None, *, max_chars: int = MAX_DESCRIPTION_CHARS) -> bool:
    """Whether a description can be sent for synthesis: a non-empty string of at most ``max_chars`` (stripped)."""
    if not isinstance(description, str):
        return False
    stripped = description.strip()
    return 0 < len(stripped) <= max_chars


def select_description(
    descriptions: Sequence[str | None],
    diversity_rewards: Sequence[float],
    rng: random.Random | None = None,
    *,
    max_chars: int = MAX_DESCRIPTION_CHARS,
) -> int | None:
    """Eq. 8: the index i* = argmax_i R_diversity(o_i) among responses with a usable description.

    Responses whose description is missing, empty or longer than ``max_chars``
    (see :func:`usable_description`), or whose reward is not finite, are skipped;
    ``None`` when no response is left.  Ties go to the lowest index, so the
    choice is deterministic; pass ``rng`` to draw uniformly among the tied
    indices instead.
    """
    if len(descriptions) != len(diversity_rewards):
        raise ValueError(
            f"{len(descriptions)} descriptions but {len(diversity_rewards)} diversity rewards: one each is needed"
        )
    candidates: list[tuple[int, float]] = []
    for i, (d, r) in enumerate(zip(descriptions, diversity_rewards, strict=True)):
        try:
            r = float(r)
        except (TypeError, ValueError):
            continue
        if math.isfinite(r) and usable_description(d, max_chars=max_chars):
            candidates.append((i, r))
    if not candidates:
        return None
    best = max(r for _, r in candidates)
    tied = [i for i, r in candidates if r == best]
    if rng is not None and len(tied) > 1:
        return rng.choice(tied)
    return tied[0]
