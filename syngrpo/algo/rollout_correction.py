"""Rollout importance-sampling correction: reweight the loss for the gap between sampler and trainer.

The rollouts are sampled by the engine (vLLM in bf16 with its own kernels, or ``generate``) but the loss
differentiates the trainer's log-probs of the same tokens.  The two disagree (REFERENCE.md: vLLM's raw and
processed log-probs, bf16 kernels), so the samples are slightly off-policy for the policy being trained.
Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy
RL training") multiplies each token's policy term by the ratio of the two, bounded:

    w = π_trainer(y) / π_sampler(y)   per token, or its product over the sequence

* ``token_truncate`` / ``sequence_truncate``: ``w`` clipped to ``[clip_min, clip_max]`` (TIS);
* ``token_mask`` / ``sequence_mask``: ``w`` kept where it lies inside the bounds and 0 outside (masked IS:
  a token or sequence the sampler saw very differently contributes nothing, but still counts in the
  loss's normaliser).

``π_trainer`` is the policy the rollouts are attributed to (π_θold: the weights at sampling time, before
this batch's updates).  This is TRL 1.16's ``vllm_importance_sampling_correction`` (its four modes, its
``clip_max = 3`` default, and its rule that a sampler log-prob of NaN counts as no difference); the
function equals TRL's code on the same tensors (``tests/peers/test_rollout_correction_vs_trl.py``).  The
trainer (:mod:`syngrpo.train.update`) applies it when ``rollout.importance_correction.mode`` is not
``off``; the policy losses multiply the weights into their per-token policy term, never the KL term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Mode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
MODES: tuple[str, ...] = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, mode: Mode,
                       clip_min: float | None = None, clip_max: float | None = 3.0) -> tuple[Tensor, Tensor]:
    """The correction's weights and which of them the bounds changed.

    ``trainer_logp``, ``sampler_logp``, ``mask``: (N, T).  Returns ``(weights, outside)``: (N, T) for the
    token modes (1 on masked positions), (N, 1) for the sequence modes; ``outside`` (bool, same shape) marks
    the raw ratios that fell outside ``[clip_min, clip_max]`` (truncated, or masked to 0).  No graph.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if clip_min is None and clip_max is None:
        raise ValueError("the correction needs clip_max, clip_min or both")
    with torch.no_grad():
        diff = torch.nan_to_num((trainer_logp - sampler_logp) * mask, nan=0.0)  # NaN: the sampler had none
        if mode.startswith("sequence"):
            diff = diff.sum(dim=-1, keepdim=True)  # (N, 1): log of the product of the token ratios
        ratio = torch.exp(diff)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        outside = (ratio < low) | (ratio > high)
        if mode.endswith("truncate"):
            weights = torch.clamp(ratio, min=clip_min, max=clip_max)
        else:
            weights = ratio.masked_fill(outside, 0.0)
    return weights, outside


def counted(values: Tensor, mask: Tensor) -> Tensor:
    """The entries of ``values`` (weights or ``outside``) its metrics count: a token mode's unmasked tokens
    ((N, T) -> 1-D), every sequence of a sequence mode ((N, 1) -> 1-D)."""
    if values.shape[-1] == 1 and mask.shape[-1] != 1:
        return values.reshape(-1)
    return values[mask.bool()]


@dataclass
class CorrectionStats:
    """The correction's metrics over a step, gathered micro-batch by micro-batch."""

    weight_sum: float = 0.0
    weight_min: float = math.inf
    weight_max: float = -math.inf
    outside: int = 0
    count: int = 0

    def add(self, weights: Tensor, outside: Tensor, mask: Tensor) -> None:
        w, o = counted(weights, mask).float(), counted(outside, mask)
        if not w.numel():
            return
        self.weight_sum += float(w.sum())
        self.weight_min = min(self.weight_min, float(w.min()))
        self.weight_max = max(self.weight_max, float(w.max()))
        self.outside += int(o.sum())
        self.count += int(w.numel())

    def metrics(self) -> dict[str, float]:
        """``rollout_is/weight_{mean,min,max}`` (TRL's ``sampling/importance_sampling_ratio/*``) and
        ``rollout_is/outside_frac``: the share of tokens (or sequences) the bounds truncated or masked."""
        if not self.count:
            return {}
        return {"rollout_is/weight_mean": self.weight_sum / self.count, "rollout_is/weight_min": self.weight_min,
                "rollout_is/weight_max": self.weight_max, "rollout_is/outside_frac": self.outside / self.count}
