"""Policy losses that change how the importance ratio enters the objective: GSPO, GSPO-token, CISPO, SAPO.

GRPO clips each token's ratio ρ_t = π_θ / π_θold and multiplies it by the sequence's advantage.  The
variants here keep everything else of :class:`~syngrpo.algo.losses.GRPOLoss` (the KL term, the
aggregation, the rollout correction's weights, the stats) and replace that one term:

* **GSPO** (Zheng et al. 2025, "Group Sequence Policy Optimization"): one ratio per sequence, the
  geometric mean of its token ratios, ``s_i = exp(mean_t log ρ_t)``, clipped as GRPO clips a token's.
  A sequence-level reward gets a sequence-level ratio; token noise no longer clips single tokens.
  The paper clips far tighter than GRPO (``eps_low 3e-4``, ``eps_high 4e-4``): set ``algorithm.eps_low``
  / ``eps_high`` with it.
* **GSPO-token**: ``s_i,t = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]``: the value of ``s_i`` on every token,
  the gradient of each token's own log-prob, so per-token advantages (an entropy-shaped advantage, a
  token reward) keep their meaning.  With one advantage per sequence it equals GSPO, value and gradient.
* **CISPO** (MiniMax-M1, 2025): clip the importance *weight* instead of the objective and stop its
  gradient, ``-sg[clip(ρ_t)] · A · log π_θ``: every token keeps a gradient (PPO's clip zeroes those
  outside the trust region, often the rare "fork" tokens).
* **SAPO** (Gao et al. 2025, "Soft Adaptive Policy Optimization"): a smooth gate instead of the hard
  clip, ``f(ρ) = 4/τ · sigmoid(τ(ρ - 1))`` (slope 1 at ρ = 1), with a larger τ (sharper decay) for
  tokens of non-positive advantage.

Each equals its peer's implementation on the same tensors, value and gradient (``tests/peers/``):
TRL 1.16's ``GRPOTrainer._compute_loss`` for ``gspo`` (``importance_sampling_level="sequence"``),
``cispo`` and ``sapo``; verl's ``compute_policy_loss_gspo`` for ``gspo_token`` (TRL has none).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from syngrpo.algo import grpo
from syngrpo.algo.losses import GRPOLoss
from syngrpo.errors import ConfigError

#: GSPO-token clamps its log-ratio from above before ``exp`` (verl's bound), so one runaway sequence
#: cannot overflow
GSPO_TOKEN_MAX_LOG_RATIO = 10.0


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's log s_i: the mean over a sequence's unmasked tokens of log π_θ - log π_θold, (N, T) -> (N, 1)."""
    m = mask.to(logp.dtype)
    return (((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)


class GSPOLoss(GRPOLoss):
    """GSPO: the clipped surrogate of the sequence ratio ``s_i = exp(mean_t log ρ_t)`` (module doc).

    The ratio's gradient flows through the mean of the sequence's log-probs; the clip fraction counts
    tokens of clipped sequences.  TRL's ``importance_sampling_level="sequence"``.
    """

    name = "gspo"

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(sequence_log_ratio(logp, old_logp, mask)).expand_as(logp)  # (N, T), one value a row
        return grpo.ratio_surrogate(ratio, advantages, mask, self.eps_low, self.eps_high)


class GSPOTokenLoss(GRPOLoss):
    """GSPO-token: ``s_i,t = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]``, clipped per token (module doc; verl's ``gspo``)."""

    name = "gspo_token"

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        log_s = logp - logp.detach() + sequence_log_ratio(logp, old_logp, mask).detach()  # (N, T)
        ratio = torch.exp(torch.clamp(log_s, max=GSPO_TOKEN_MAX_LOG_RATIO))
        return grpo.ratio_surrogate(ratio, advantages, mask, self.eps_low, self.eps_high)


def _bound(name: str, value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0 or null, got {value!r}")
    return value


class CISPOLoss(GRPOLoss):
    """CISPO: ``-sg[clamp(ρ_t, ratio_min, ratio_max)] · A · log π_θ`` per token (module doc).

    Defaults are TRL's: an upper bound only, ``ratio_max = 5`` (ScaleRL's ε_max; TRL reads it from
    ``epsilon_high``, which here stays the PPO clip of the other losses).  verl's and EasyR1's CISPO
    clip on both sides, ``[1 - eps_low, 1 + eps_high]``: ``ratio_min: 0.8, ratio_max: 1.2`` is that.
    The PPO clip range ``eps_low`` / ``eps_high`` does not enter; ``clip_frac`` is the share of tokens
    whose weight the bounds changed.  DAPO's token-level mean is the usual aggregation (TRL's).
    """

    name = "cispo"

    def __init__(self, *, ratio_max: float | None = 5.0, ratio_min: float | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.ratio_max = _bound("ratio_max", ratio_max)
        self.ratio_min = _bound("ratio_min", ratio_min)
        if self.ratio_min is not None and self.ratio_max is not None and self.ratio_min > self.ratio_max:
            raise ConfigError(f"ratio_min ({self.ratio_min}) must not exceed ratio_max ({self.ratio_max})")

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(logp - old_logp).detach()  # (N, T)
        weight = torch.clamp(ratio, min=self.ratio_min, max=self.ratio_max)
        a = grpo.per_token(advantages, logp)
        return -weight * a * logp, grpo.masked_fraction(weight != ratio, mask)


class SAPOLoss(GRPOLoss):
    """SAPO: ``-f_τ(ρ_t) · A`` with the soft gate ``f_τ(ρ) = 4/τ · sigmoid(τ(ρ - 1))`` (module doc).

    ``tau_pos`` for tokens with A > 0, ``tau_neg`` (larger: negative updates decay faster off-policy)
    otherwise; defaults 1.0 / 1.05 as in TRL and verl (the paper's).  No hard clip: ``clip_frac`` is 0.
    """

    name = "sapo"

    def __init__(self, *, tau_pos: float = 1.0, tau_neg: float = 1.05, **options: Any) -> None:
        super().__init__(**options)
        for key, value in (("tau_pos", tau_pos), ("tau_neg", tau_neg)):
            if not math.isfinite(float(value)) or float(value) <= 0:
                raise ConfigError(f"{key} must be a finite number > 0, got {value!r}")
        self.tau_pos = float(tau_pos)
        self.tau_neg = float(tau_neg)

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(logp - old_logp)  # (N, T)
        a = grpo.per_token(advantages, ratio)
        tau = torch.where(a > 0, self.tau_pos, self.tau_neg)
        gate = torch.sigmoid(tau * (ratio - 1)) * 4 / tau
        return -gate * a, torch.zeros((), dtype=torch.float32)
