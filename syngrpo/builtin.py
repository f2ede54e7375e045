"""The core's own registrations: rewards, advantage estimators, policy losses and the Hugging Face dataset format.

Registered through the ``syngrpo`` entry-point group like any other plugin.
Importing this module is cheap: the factories import torch only when called.
An option a factory does not know is a :class:`~syngrpo.errors.ConfigError`
that lists the options it does know.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import keyword_options


def _factory(module: str, cls_name: str, what: str) -> Callable[..., Any]:
    """A factory ``(**options) -> module.cls_name(**options)`` that imports ``module`` lazily."""

    def factory(**options: Any) -> Any:
        cls = getattr(importlib.import_module(module), cls_name)
        known = keyword_options(cls)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {what}; it takes: {', '.join(sorted(known)) or 'no options'}"
            )
        return cls(**options)

    factory.__name__ = f"make_{cls_name}"
    factory.__doc__ = f"Build the {what}."
    return factory


#: kind -> (name, module, class, description) of every built-in; one row per registration
_BUILTINS: dict[str, list[tuple[str, str, str, str]]] = {
    "reward": [
        ("accuracy", "syngrpo.perception.rewards", "AccuracyReward",
         "R_acc: the task's accuracy of the parsed <answer> (IoU for REC, scaled mAP for OVD/ISR)"),
        ("format", "syngrpo.perception.rewards", "FormatReward",
         "R_format: 1 when every tag the prompt asked for is present once and in order"),
    ],
    "advantage estimator": [
        ("grpo", "syngrpo.algo.losses", "GRPOAdvantage", "(r - mean) / (std + eps) per group (eq. 1); options: eps, std"),
        ("dr_grpo", "syngrpo.algo.losses", "DrGRPOAdvantage", "Dr. GRPO: r - mean per group, no std division"),
        ("mc_grpo", "syngrpo.algo.losses", "MCGRPOAdvantage",
         "MC-GRPO: (r - median) / (MAD + eps), G+1 rollouts with the median one dropped"),
    ],
    "policy loss": [
        ("grpo", "syngrpo.algo.losses", "GRPOLoss",
         "clipped surrogate + beta * KL(k3); options: eps_low, eps_high, beta, aggregation, max_tokens"),
        ("entropy_loss", "syngrpo.algo.losses", "EntropyLoss",
         "grpo minus coef * token entropy (paper baseline 'GRPO + Entropy Loss')"),
        ("entropy_advantage", "syngrpo.algo.losses", "EntropyAdvantageLoss",
         "grpo on advantages + min(alpha*H, |A|/kappa) (paper baseline 'GRPO + Entropy Adv.')"),
        ("gspo", "syngrpo.algo.ratio_losses", "GSPOLoss",
         "GSPO: clipped surrogate of the sequence ratio exp(mean log ratio) (TRL's sequence-level importance sampling)"),
        ("gspo_token", "syngrpo.algo.ratio_losses", "GSPOTokenLoss",
         "GSPO-token: the sequence ratio's value with each token's gradient (verl's gspo)"),
        ("cispo", "syngrpo.algo.ratio_losses", "CISPOLoss",
         "CISPO: -sg[clamp(ratio)] * A * log p, every token keeps a gradient; options: ratio_max (5), ratio_min"),
        ("sapo", "syngrpo.algo.ratio_losses", "SAPOLoss",
         "SAPO: soft gate 4/tau * sigmoid(tau (ratio - 1)) instead of the clip; options: tau_pos (1), tau_neg (1.05)"),
        ("clip_cov", "syngrpo.algo.cov_losses", "ClipCovLoss",
         "Clip-Cov: no gradient for a few high-covariance tokens; options: cov_fraction, cov_low, cov_high"),
        ("kl_cov", "syngrpo.algo.cov_losses", "KLCovLoss",
         "KL-Cov: kl_coef * |log ratio| on the top-covariance tokens; options: cov_fraction, kl_coef"),
    ],
    "dataset format": [
        ("hf", "syngrpo.data.hf", "HfDataset",
         "Hugging Face datasets: parquet / arrow files or a saved dataset (options columns, image_field)"),
    ],
}


def _register_all(kind: str, register: Callable[..., Any]) -> None:
    for name, module, cls_name, description in _BUILTINS[kind]:
        register(name, _factory(module, cls_name, f"{kind} {name!r}"), description=description)


@hookimpl
def register_rewards(register):
    _register_all("reward", register)


@hookimpl
def register_advantage_estimators(register):
    _register_all("advantage estimator", register)


@hookimpl
def register_policy_losses(register):
    _register_all("policy loss", register)


@hookimpl
def register_dataset_formats(register):
    _register_all("dataset format", register)
