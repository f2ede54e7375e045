"""Advantage estimators and policy losses: the two GRPO-family plugin kinds the core ships.

An **advantage estimator** turns the summed rewards of eq. 7, one row per
prompt, into advantages: ``estimator(rewards (B, G)) -> (B, G)``.  It also says
how many extra rollouts it wants per prompt (``extra_rollouts``; MC-GRPO: 1) and
which rollouts take part in the update (``keep_mask``; MC-GRPO drops its pivot).

A **policy loss** turns per-token log-probabilities and advantages into the
scalar to minimise, plus statistics to log::

    loss, stats = policy_loss(logp=..., old_logp=..., ref_logp=..., advantages=..., mask=..., entropy=...)

Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask``, ``entropy``: (N, T);
``advantages``: (N,).  ``old_logp=None`` means the rollouts came from the current
weights (one update per batch), so the ratio is 1 with gradient; ``ref_logp=None``
is allowed only when ``beta == 0``.  ``needs_entropy`` tells the trainer to
compute per-token entropy; ``entropy_needs_grad`` whether it must keep its graph.
With ``rollout.importance_correction`` on, the trainer also passes ``is_weights``
((N, T) or (N, 1), no graph): the sampler-to-trainer importance weights of
:mod:`syngrpo.algo.rollout_correction`, which multiply each token's policy term
(not the KL term), as TRL and verl apply them.

Built-ins (registered by :mod:`syngrpo.builtin`):

=====================  =========================================================
advantage estimators   ``grpo`` (eq. 1), ``dr_grpo`` (no std), ``mc_grpo`` (median, MAD)
policy losses          ``grpo`` (clip + β·KL), ``entropy_loss``, ``entropy_advantage``;
                       ``gspo``, ``gspo_token``, ``cispo``, ``sapo``
                       (:mod:`syngrpo.algo.ratio_losses`); ``clip_cov``, ``kl_cov``
                       (:mod:`syngrpo.algo.cov_losses`)
=====================  =========================================================

Dr. GRPO is two changes: ``advantage_estimator: dr_grpo`` (no std) and the
policy-loss option ``aggregation: constant`` (no per-sequence length
normalisation).  DAPO's clip-higher is ``eps_high: 0.28`` with ``aggregation: token_mean``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from syngrpo.algo import grpo
from syngrpo.errors import ConfigError

# --------------------------------------------------------------------------------------
# advantage estimators
# --------------------------------------------------------------------------------------


@runtime_checkable
class AdvantageEstimator(Protocol):
    """``(rewards (B, G)) -> advantages (B, G)``, plus what the trainer must do around it."""

    #: rollouts to sample per prompt beyond the configured G (MC-GRPO: 1)
    extra_rollouts: int

    def __call__(self, rewards: Tensor) -> Tensor: ...

    def keep_mask(self, rewards: Tensor) -> Tensor:
        """bool (B, G): the rollouts that take part in the policy update."""
        ...


class _Estimator:
    extra_rollouts: int = 0

    def keep_mask(self, rewards: Tensor) -> Tensor:
        return torch.ones_like(rewards, dtype=torch.bool)

    def __call__(self, rewards: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}")
    return eps


class GRPOAdvantage(_Estimator):
    """Eq. 1: ``(r - mean(r)) / (std(r) + eps)`` per group.

    Defaults follow VLM-R1 / TRL (the peers the paper compares with): the sample
    (Bessel-corrected) standard deviation and ``eps = 1e-4``; ``std="population"``
    divides by G instead of G-1.
    """

    def __init__(self, *, eps: float = 1e-4, std: str = "sample") -> None:
        if std not in ("sample", "population"):
            raise ConfigError(f"std must be 'sample' or 'population', got {std!r}")
        self.eps = _check_eps(eps)
        self.std = std

    def __call__(self, rewards: Tensor) -> Tensor:
        return grpo.group_advantages(rewards, scale="std", baseline="mean", eps=self.eps, std=self.std)  # type: ignore[arg-type]


class DrGRPOAdvantage(_Estimator):
    """Dr. GRPO ("GRPO done right"): ``r - mean(r)``, no division by the std.

    Dividing by the std up-weights groups whose rewards barely differ; Dr. GRPO
    removes that bias.  Pair it with ``aggregation: constant`` in the policy loss.
    """

    def __call__(self, rewards: Tensor) -> Tensor:
        return grpo.group_advantages(rewards, scale="none", baseline="mean")


class MCGRPOAdvantage(_Estimator):
    """MC-GRPO (Kim 2026): median baseline, scaled by the median absolute deviation.

    ``A = (r - median(r)) / (MAD(r) + eps)`` with ``MAD = median(|r - median(r)|)``
    (``scale="none"`` keeps ``r - median(r)``).  The median is robust to one
    outlier reward, which with few rollouts flips the sign of the mean-centred
    advantages.  The estimator asks for one extra rollout (G+1, odd) and its
    ``keep_mask`` drops the median rollout itself (advantage 0), so G rollouts per
    prompt enter the update.  ``eps = 1e-3`` as in the authors' code.
    For an even group the median is the lower middle value (torch's rule).
    """

    extra_rollouts = 1

    def __init__(self, *, eps: float = 1e-3, scale: str = "mad", exclude_pivot: bool = True) -> None:
        if scale not in ("mad", "none"):
            raise ConfigError(f"scale must be 'mad' or 'none', got {scale!r}")
        self.eps = _check_eps(eps)
        self.scale = scale
        self.exclude_pivot = bool(exclude_pivot)
        self.extra_rollouts = 1 if self.exclude_pivot else 0

    def __call__(self, rewards: Tensor) -> Tensor:
        return grpo.group_advantages(rewards, scale=self.scale, baseline="median", eps=self.eps)  # type: ignore[arg-type]

    def keep_mask(self, rewards: Tensor) -> Tensor:
        if not self.exclude_pivot:
            return super().keep_mask(rewards)
        return ~grpo.median_pivot_mask(rewards)


# --------------------------------------------------------------------------------------
# policy losses
# --------------------------------------------------------------------------------------


@runtime_checkable
class PolicyLoss(Protocol):
    """``(*, logp, old_logp, ref_logp, advantages, mask, entropy) -> (loss, stats)``."""

    needs_entropy: bool
    entropy_needs_grad: bool
    beta: float

    def __call__(
        self,
        *,
        logp: Tensor,
        old_logp: Tensor | None,
        ref_logp: Tensor | None,
        advantages: Tensor,
        mask: Tensor,
        entropy: Tensor | None = None,
        is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]: ...


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    m = mask.to(values.dtype)
    return float((values.detach() * m).sum() / m.sum().clamp(min=1.0))


class GRPOLoss:
    """Clipped surrogate with a KL penalty to the reference model (eq. 1's objective, min & clip included).

    Per token: ``-min(ρ·A, clip(ρ, 1-eps_low, 1+eps_high)·A) + beta·KL_k3``, then
    reduced by ``aggregation`` (see :func:`syngrpo.algo.grpo.aggregate`).  Defaults are
    VLM-R1's REC settings: ``eps_low = eps_high = 0.2``, ``beta = 0.04``,
    ``sequence_mean``.  ``eps_high > eps_low`` is DAPO's clip-higher.

    Stats (floats): ``loss``, ``policy_loss`` (the surrogate part), ``kl`` (mean k3
    over unmasked tokens; 0 when no reference is given), ``clip_frac``,
    ``advantage_mean``, and ``entropy`` when per-token entropy was passed in.
    """

    name = "grpo"
    needs_entropy = False
    entropy_needs_grad = False

    def __init__(
        self,
        *,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        beta: float = 0.04,
        aggregation: str = "sequence_mean",
        max_tokens: int | None = None,
    ) -> None:
        for name, value in (("eps_low", eps_low), ("eps_high", eps_high), ("beta", beta)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if float(eps_low) >= 1:
            raise ConfigError(f"eps_low must be below 1 (the ratio's lower clip is 1 - eps_low), got {eps_low!r}")
        if aggregation not in ("sequence_mean", "token_mean", "constant"):
            raise ConfigError(f"aggregation must be 'sequence_mean', 'token_mean' or 'constant', got {aggregation!r}")
        if max_tokens is not None and int(max_tokens) <= 0:
            raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.eps_low = float(eps_low)
        self.eps_high = float(eps_high)
        self.beta = float(beta)
        self.aggregation = aggregation
        self.max_tokens = None if max_tokens is None else int(max_tokens)

    def _check(self, logp: Tensor, advantages: Tensor, mask: Tensor, ref_logp: Tensor | None) -> None:
        if logp.dim() != 2 or mask.shape != logp.shape:
            raise ValueError(f"logp and mask must both be (N, T); got {tuple(logp.shape)} and {tuple(mask.shape)}")
        if advantages.shape[0] != logp.shape[0] or advantages.dim() not in (1, 2):
            raise ValueError(f"advantages must be (N,) or (N, T) with N={logp.shape[0]}, got {tuple(advantages.shape)}")
        if self.beta > 0 and ref_logp is None:
            raise ValueError("this policy loss has beta > 0 and needs ref_logp (the reference model's log-probs)")

    def __call__(
        self,
        *,
        logp: Tensor,
        old_logp: Tensor | None,
        ref_logp: Tensor | None,
        advantages: Tensor,
        mask: Tensor,
        entropy: Tensor | None = None,
        is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """One step's loss: check, shape the advantages, the variant's surrogate (times the rollout
        correction's weights) + KL, then the variant's own term."""
        self._check(logp, advantages, mask, ref_logp)
        if self.needs_entropy and entropy is None:
            raise ValueError(f"the {self.name} policy loss needs per-token entropy (N, T)"
                             + (" with its graph" if self.entropy_needs_grad else ""))
        token_advantages = self._advantages(advantages, entropy)
        old = logp.detach() if old_logp is None else old_logp.detach()
        stats: dict[str, float] = {}
        per_token, clip_frac = self._surrogate(logp, old, token_advantages.detach(), mask, stats)  # (N, T)
        if is_weights is not None:  # the sampler/trainer mismatch (rollout.importance_correction), no graph
            per_token = per_token * is_weights.detach().to(per_token.dtype)
        policy_loss = self._aggregate(per_token, mask)
        loss = policy_loss
        kl_value = 0.0
        if ref_logp is not None:
            kl = grpo.kl_k3(logp, ref_logp.detach())  # (N, T)
            kl_value = _masked_mean(kl, mask)
            if self.beta > 0:
                loss = loss + self.beta * self._aggregate(kl, mask)
        stats.update({
            "policy_loss": float(policy_loss.detach()),
            "kl": kl_value,
            "clip_frac": float(clip_frac),
            "advantage_mean": float(advantages.detach().float().mean()) if advantages.numel() else 0.0,
        })
        if entropy is not None:
            stats["entropy"] = _masked_mean(entropy, mask)
        loss = self._extra_term(loss, stats, advantages=advantages, shaped=token_advantages, mask=mask,
                                entropy=entropy)
        stats["loss"] = float(loss.detach())
        return loss, stats

    def _surrogate(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   stats: dict[str, float]) -> tuple[Tensor, Tensor]:
        """The per-token policy term to minimise (N, T) and its clip fraction: GRPO's clipped ratio.

        ``old_logp`` and ``advantages`` carry no graph; a variant may add its own entries to ``stats``.
        """
        return grpo.clipped_surrogate(logp, old_logp, advantages, mask, self.eps_low, self.eps_high)

    def _aggregate(self, per_token: Tensor, mask: Tensor) -> Tensor:
        return grpo.aggregate(per_token, mask, self.aggregation, self.max_tokens)  # type: ignore[arg-type]

    def _advantages(self, advantages: Tensor, entropy: Tensor | None) -> Tensor:
        """The advantages the surrogate uses: (N,) or (N, T); plain GRPO leaves them as they are."""
        return advantages

    def _extra_term(self, loss: Tensor, stats: dict[str, float], *, advantages: Tensor, shaped: Tensor,
                    mask: Tensor, entropy: Tensor | None) -> Tensor:
        """A variant's term added to the loss (and its stats); plain GRPO adds nothing."""
        return loss


class EntropyLoss(GRPOLoss):
    """The paper's "GRPO + Entropy Loss" baseline: GRPO loss minus ``coef`` × mean token entropy.

    Maximising entropy directly keeps the policy from collapsing onto one answer.
    ``entropy`` must be computed with its graph (``entropy_needs_grad``); it is
    reduced with the same ``aggregation`` as the policy loss.  The paper does not
    state its coefficient; ``coef = 1e-3`` is a small default.  Extra stat:
    ``entropy_bonus`` (coef × aggregated entropy).
    """

    name = "entropy_loss"
    needs_entropy = True
    entropy_needs_grad = True

    def __init__(self, *, coef: float = 1e-3, **options: Any) -> None:
        super().__init__(**options)
        if not math.isfinite(float(coef)):
            raise ConfigError(f"coef must be a finite number, got {coef!r}")
        self.coef = float(coef)

    def _extra_term(self, loss: Tensor, stats: dict[str, float], *, advantages: Tensor, shaped: Tensor,
                    mask: Tensor, entropy: Tensor | None) -> Tensor:
        assert entropy is not None  # checked in __call__
        bonus = self.coef * self._aggregate(entropy, mask)
        stats["entropy_bonus"] = float(bonus.detach())
        return loss - bonus


class EntropyAdvantageLoss(GRPOLoss):
    """The paper's "GRPO + Entropy Adv." baseline (Cheng et al. 2025): GRPO on entropy-shaped advantages.

    Each token's advantage becomes ``A + min(alpha · H_t.detach(), |A| / kappa)``
    (:func:`syngrpo.algo.grpo.entropy_advantage`): uncertain tokens get a little extra
    credit, bounded so it never dominates or flips the reward's advantage.
    Defaults α = 0.4, κ = 2 (the authors' GRPO setting).  Extra stat:
    ``entropy_advantage`` (mean added term over unmasked tokens).
    """

    name = "entropy_advantage"
    needs_entropy = True
    entropy_needs_grad = False

    def __init__(self, *, alpha: float = 0.4, kappa: float = 2.0, **options: Any) -> None:
        super().__init__(**options)
        if not math.isfinite(float(alpha)) or float(alpha) < 0:
            raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not math.isfinite(float(kappa)) or float(kappa) <= 1:
            raise ConfigError(f"kappa must be > 1 so the entropy term cannot flip an advantage's sign, got {kappa!r}")
        self.alpha = float(alpha)
        self.kappa = float(kappa)

    def _advantages(self, advantages: Tensor, entropy: Tensor | None) -> Tensor:
        assert entropy is not None  # checked in __call__
        if advantages.dim() != 1:
            raise ValueError(f"advantages must be (N,) with N={entropy.shape[0]}, got {tuple(advantages.shape)}")
        return grpo.entropy_advantage(advantages.detach(), entropy.detach(), self.alpha, self.kappa)  # (N, T)

    def _extra_term(self, loss: Tensor, stats: dict[str, float], *, advantages: Tensor, shaped: Tensor,
                    mask: Tensor, entropy: Tensor | None) -> Tensor:
        stats["entropy_advantage"] = _masked_mean(shaped - advantages.detach().unsqueeze(1).to(shaped.dtype), mask)
        return loss
