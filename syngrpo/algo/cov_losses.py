"""Clip-Cov and KL-Cov: entropy control through the few tokens whose covariance drives entropy down.

Cui et al. 2025 ("The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models", cited by
the Syn-GRPO paper as an entropy-collapse remedy) show that the policy's entropy falls in proportion to the
covariance between a token's log-probability and its advantage, and that a tiny share of tokens carries most
of it.  Both losses find those tokens in each micro-batch by the centred product

    cov_t = (A_t - mean(A)) · (log π_θ(y_t) - mean(log π_θ))      (means over the unmasked tokens)

and restrain only them:

* **Clip-Cov**: among tokens the PPO clip left alone with ``cov_low < cov_t < cov_high``, a random
  ``max(1, ⌊cov_fraction · tokens⌋)`` lose their gradient (the loss term is multiplied by 0);
* **KL-Cov**: the ``max(1, ⌊cov_fraction · tokens⌋)`` tokens of largest cov_t get ``kl_coef · |log ρ_t|``
  added to the unclipped ``-ρ_t · A`` (KL-Cov uses no PPO clip at all).

The Syn-GRPO paper has no peer implementation in TRL; these equal verl's ``compute_policy_loss_clip_cov`` /
``compute_policy_loss_kl_cov`` (verl 0.9.1) on the same tensors, value and gradient, Clip-Cov's random
choice included when both draw from the same torch seed (``tests/peers/``).  Defaults are verl's
(``cov_fraction 2e-4``, ``cov_low 1``, ``cov_high 5``, ``kl_coef 0.1``); the paper uses a KL-Cov fraction of
2e-3 for 7B models and 2e-4 for 32B, and ``kl_coef 1``.  Clip-Cov draws from torch's global generator (as
verl does), which the trainer seeds and checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from syngrpo.algo import grpo
from syngrpo.algo.losses import GRPOLoss
from syngrpo.errors import ConfigError


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over unmasked positions with verl's ``+ 1e-8`` in the denominator (the covariance must pick the
    same tokens as verl's, ties included)."""
    return (values * mask).sum() / (mask.sum() + 1e-8)


def _check_fraction(value: Any) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"cov_fraction must be in (0, 1] (the share of tokens restrained), got {value!r}")
    return value


class ClipCovLoss(GRPOLoss):
    """Clip-Cov (module doc): the clipped surrogate with a few high-covariance tokens' gradients removed.

    Extra stat ``cov_clip_frac``: the share of unmasked tokens whose gradient the covariance clip removed.
    """

    name = "clip_cov"

    def __init__(self, *, cov_fraction: float = 2e-4, cov_low: float = 1.0, cov_high: float = 5.0,
                 **options: Any) -> None:
        super().__init__(**options)
        self.cov_fraction = _check_fraction(cov_fraction)
        if not (math.isfinite(float(cov_low)) and math.isfinite(float(cov_high)) and cov_low < cov_high):
            raise ConfigError(f"cov_low must be below cov_high (both finite), got {cov_low!r} and {cov_high!r}")
        self.cov_low, self.cov_high = float(cov_low), float(cov_high)

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(logp - old_logp)  # (N, T)
        a = grpo.per_token(advantages, ratio)
        loss1 = -a * ratio
        loss2 = -a * torch.clamp(ratio, 1 - self.eps_low, 1 + self.eps_high)
        valid = mask > 0
        m = mask.to(ratio.dtype)
        clipped = (loss2 > loss1) & valid  # the PPO clip already removed these tokens' gradient
        with torch.no_grad():
            cov = (a - _masked_mean(a, m)) * (logp - _masked_mean(logp, m))  # (N, T)
            cov = cov.masked_fill(~valid | clipped, -math.inf)
            budget = max(int(self.cov_fraction * m.sum().item()), 1)
            candidates = torch.nonzero((cov < self.cov_high) & (cov > self.cov_low) & valid)  # (K, 2)
            if len(candidates):
                perm = torch.randperm(len(candidates)).to(candidates.device)
                candidates = candidates[perm[: min(budget, len(candidates))]]
            keep = torch.ones_like(ratio)
            keep[candidates[:, 0], candidates[:, 1]] = 0
        stats["cov_clip_frac"] = float(grpo.masked_fraction(keep == 0, mask))
        return torch.maximum(loss1, loss2) * keep, grpo.masked_fraction(clipped, mask)


class KLCovLoss(GRPOLoss):
    """KL-Cov (module doc): ``-ρ_t · A`` (no clip), plus ``kl_coef · |log ρ_t|`` on the top-covariance tokens.

    Extra stat ``kl_cov_frac``: the share of unmasked tokens that got the penalty.
    """

    name = "kl_cov"

    def __init__(self, *, cov_fraction: float = 2e-4, kl_coef: float = 0.1, **options: Any) -> None:
        super().__init__(**options)
        self.cov_fraction = _check_fraction(cov_fraction)
        if not math.isfinite(float(kl_coef)) or float(kl_coef) < 0:
            raise ConfigError(f"kl_coef must be a finite number >= 0, got {kl_coef!r}")
        self.kl_coef = float(kl_coef)

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        log_ratio = logp - old_logp
        ratio = torch.exp(log_ratio)  # (N, T)
        a = grpo.per_token(advantages, ratio)
        loss = -a * ratio
        penalised = loss + self.kl_coef * log_ratio.abs()
        valid = mask > 0
        chosen = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
        with torch.no_grad():
            flat_valid = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
            adv_v, logp_v = a[valid].reshape(-1).cpu(), logp[valid].reshape(-1).cpu()
            if len(adv_v):
                cov = (adv_v - adv_v.mean()) * (logp_v - logp_v.mean())
                top = torch.topk(cov, max(1, int(len(cov) * self.cov_fraction)), largest=True).indices
                chosen[flat_valid[top.to(flat_valid.device)]] = True
        chosen = chosen.view_as(valid)
        stats["kl_cov_frac"] = float(grpo.masked_fraction(chosen, mask))
        return torch.where(chosen, penalised, loss), torch.zeros((), dtype=torch.float32)
