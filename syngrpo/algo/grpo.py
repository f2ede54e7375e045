"""GRPO maths as small pure torch functions: tensors in, tensors out.

Notation: B prompts, G rollouts per prompt, N = B·G sequences, T completion
tokens (right-padded; ``mask`` marks the real ones), V vocabulary size.
Nothing here knows about devices, models, logging or configs; the policy-loss
plugins in :mod:`syngrpo.algo.losses` compose these functions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Baseline = Literal["mean", "median"]
Scale = Literal["std", "mad", "none"]
StdKind = Literal["sample", "population"]
Aggregation = Literal["sequence_mean", "token_mean", "constant"]


def _median(x: Tensor) -> Tensor:
    """Per-row median of (B, G) as (B, 1); for even G the lower of the two middle values (torch's rule)."""
    return x.median(dim=1, keepdim=True).values


def group_advantages(
    rewards: Tensor,
    *,
    scale: Scale = "std",
    baseline: Baseline = "mean",
    eps: float = 1e-4,
    std: StdKind = "sample",
) -> Tensor:
    """Group-relative advantages, eq. 1 of Syn-GRPO: Â_i = (r_i - mean(r)) / std(r).

    ``rewards`` (B, G) -> advantages (B, G), one row per prompt.

    * ``baseline="mean"`` is eq. 1; ``"median"`` is MC-GRPO's median-centred baseline.
    * ``scale="std"`` divides by ``std + eps`` (``std="sample"``: Bessel-corrected, as
      ``torch.std`` in TRL / VLM-R1; ``"population"``: divide by G); ``"mad"`` divides by
      the median absolute deviation ``+ eps`` (MC-GRPO); ``"none"`` leaves the
      centred rewards (Dr. GRPO).
    * A group whose rewards are all equal gets exactly 0 for every rollout
      (whatever the scale); a group of one rollout has sample std 0, not NaN.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    if scale not in ("std", "mad", "none"):
        raise ValueError(f"scale must be 'std', 'mad' or 'none', got {scale!r}")
    if baseline not in ("mean", "median"):
        raise ValueError(f"baseline must be 'mean' or 'median', got {baseline!r}")
    if std not in ("sample", "population"):
        raise ValueError(f"std must be 'sample' or 'population', got {std!r}")
    r = rewards.to(torch.float32) if not rewards.is_floating_point() else rewards
    g = r.shape[1]
    center = r.mean(dim=1, keepdim=True) if baseline == "mean" else _median(r)  # (B, 1)
    adv = r - center  # (B, G)
    if scale == "std":
        mean = r.mean(dim=1, keepdim=True)
        ddof = 1 if std == "sample" else 0
        denom = max(g - ddof, 1)
        spread = ((r - mean) ** 2).sum(dim=1, keepdim=True).div(denom).sqrt()  # (B, 1)
        adv = adv / (spread + eps)
    elif scale == "mad":
        mad = _median((r - _median(r)).abs())  # (B, 1)
        adv = adv / (mad + eps)
    # A group that all agrees carries no signal: exactly 0, not the rounding error of its mean / eps.
    agree = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)  # (B, 1)
    return torch.where(agree, torch.zeros_like(adv), adv)


def median_pivot_mask(rewards: Tensor) -> Tensor:
    """MC-GRPO's pivot: per row of ``rewards`` (B, G), True at the one index ``torch.median`` picks.

    With an odd G that rollout is the median and has zero advantage under the
    median baseline; MC-GRPO samples G+1 rollouts and drops this one from the
    update.  Returns a bool (B, G) mask with exactly one True per row.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    idx = rewards.median(dim=1).indices  # (B,)
    mask = torch.zeros_like(rewards, dtype=torch.bool)
    mask[torch.arange(rewards.shape[0], device=rewards.device), idx] = True
    return mask


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at every position: (N, T, V) -> (N, T), in nats.

    H_t = -Σ_v π(v) log π(v) (the per-token entropy averaged into H(q) in §3.2).
    Logits of -inf (suppressed tokens) contribute 0, not NaN.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    return -plogp.sum(dim=-1)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(π_θ || π_ref) estimate k3 = exp(ref - logp) - (ref - logp) - 1, (N, T) -> (N, T).

    Unbiased and never negative; the estimator of GRPO / VLM-R1.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: Aggregation = "sequence_mean",
    max_tokens: int | None = None,
) -> Tensor:
    """Reduce per-token values (N, T) under ``mask`` (N, T) to a scalar.

    * ``"sequence_mean"``: mean over tokens of each sequence, then over sequences
      (eq. 1's objective, VLM-R1).  Sequences with no unmasked token are left out
      of the average (e.g. a rollout excluded by MC-GRPO).
    * ``"token_mean"``: sum over all unmasked tokens / their number (DAPO's token-level loss).
    * ``"constant"``: sum over unmasked tokens / (N · ``max_tokens``), Dr. GRPO's
      length-unbiased form; ``max_tokens`` defaults to T.

    Returns 0 (still attached to the graph) when nothing is unmasked.
    """
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must have the same shape")
    m = mask.to(values.dtype)
    masked = values * m  # (N, T)
    if mode == "sequence_mean":
        lengths = m.sum(dim=1)  # (N,)
        per_seq = masked.sum(dim=1) / lengths.clamp(min=1.0)  # (N,)
        present = (lengths > 0).to(values.dtype)
        return (per_seq * present).sum() / present.sum().clamp(min=1.0)
    if mode == "token_mean":
        return masked.sum() / m.sum().clamp(min=1.0)
    if mode == "constant":
        n, t = values.shape
        length = t if max_tokens is None else int(max_tokens)
        if length <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens!r}")
        return masked.sum() / float(max(n, 1) * length)
    raise ValueError(f"aggregation must be 'sequence_mean', 'token_mean' or 'constant', got {mode!r}")


def _per_token(advantages: Tensor, like: Tensor) -> Tensor:
    """Advantages (N,) or (N, T) as (N, T)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (N, 1)
    return advantages.to(like.dtype).expand_as(like)


def clip_mask(ratio: Tensor, advantages: Tensor, eps_low: float = 0.2, eps_high: float = 0.2) -> Tensor:
    """Tokens whose gradient the PPO clip removes: (ratio < 1-ε_low and A < 0) or (ratio > 1+ε_high and A > 0)."""
    a = _per_token(advantages, ratio)
    return ((ratio < 1.0 - eps_low) & (a < 0)) | ((ratio > 1.0 + eps_high) & (a > 0))


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """PPO/GRPO clipped surrogate as a per-token loss to minimise, and the clip fraction.

    ``logp``, ``old_logp``, ``mask``: (N, T); ``advantages``: (N,) (one per
    sequence, eq. 1) or (N, T) (per token, e.g. entropy-shaped).  Returns
    ``(loss (N, T), clip_frac)`` with ``loss = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A)``,
    ρ = exp(logp - old_logp), and ``clip_frac`` (0-d tensor) the fraction of
    unmasked tokens whose gradient the clip removes (see :func:`clip_mask`).
    ``eps_high > eps_low`` is DAPO's clip-higher.
    """
    return ratio_surrogate(torch.exp(logp - old_logp), advantages, mask, eps_low, eps_high)


def ratio_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """The clipped surrogate of any importance ratio: ``-min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A)`` per token.

    ``ratio`` (N, T) is whatever the loss calls ρ: the token ratio of PPO/GRPO, GSPO's sequence ratio
    broadcast over the tokens, GSPO-token's mixed one.  Returns ``(loss (N, T), clip_frac)`` as
    :func:`clipped_surrogate` does.
    """
    a = _per_token(advantages, ratio)  # (N, T)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a
    loss = -torch.minimum(unclipped, clipped)
    return loss, masked_fraction(clip_mask(ratio.detach(), a.detach(), eps_low, eps_high), mask)


def masked_fraction(hits: Tensor, mask: Tensor) -> Tensor:
    """The share of unmasked positions where ``hits`` (bool, the shape of ``mask``) is true, as a detached 0-d tensor."""
    m = mask.to(torch.float32)
    return ((hits.to(torch.float32) * m).sum() / m.sum().clamp(min=1.0)).detach()


def per_token(advantages: Tensor, like: Tensor) -> Tensor:
    """Advantages (N,) or (N, T) as (N, T), in ``like``'s dtype (the policy-loss variants' common first step)."""
    return _per_token(advantages, like)


def entropy_advantage(advantages: Tensor, entropy: Tensor, alpha: float = 0.4, kappa: float = 2.0) -> Tensor:
    """Entropy-based advantage shaping (Cheng et al. 2025, "Reasoning with Exploration: An Entropy Perspective").

    A_shaped = A + ψ(H),  ψ(H) = min(α · H.detach(), |A| / κ), per token.
    ``advantages`` (N,) or (N, T), ``entropy`` (N, T) -> (N, T).  The entropy is
    detached (the term changes the advantage, not the gradient's form), and with
    κ > 1 the term never flips the sign of a negative advantage; a zero advantage
    stays zero.  The authors use α = 0.4 with GRPO and κ = 2.
    """
    a = _per_token(advantages, entropy)  # (N, T)
    psi = torch.minimum(alpha * entropy.detach(), a.abs() / kappa)
    return a + psi
