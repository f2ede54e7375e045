"""The core's own registrations: rewards, advantage estimators and policy losses.

Registered through the ``syngrpo`` entry-point group like any other plugin.
Importing this module is cheap: the factories import torch only when called.
An option a factory does not know is a :class:`~syngrpo.errors.ConfigError`
that lists the options it does know.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl


def _factory(module: str, cls_name: str, what: str) -> Callable[..., Any]:
    """A factory ``(**options) -> module.cls_name(**options)`` that imports ``module`` lazily."""

    def factory(**options: Any) -> Any:
        cls = getattr(importlib.import_module(module), cls_name)
        known = _keyword_options(cls)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {what}; it takes: {', '.join(sorted(known)) or 'no options'}"
            )
        return cls(**options)

    factory.__name__ = f"make_{cls_name}"
    factory.__doc__ = f"Build the {what}."
    return factory


def _keyword_options(cls: type) -> set[str]:
    """Keyword options of ``cls.__init__``, following ``**options`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


@hookimpl
def register_rewards(register):
    register(
        "accuracy",
        _factory("syngrpo.rewards", "AccuracyReward", "reward 'accuracy'"),
        description="R_acc: the task's accuracy of the parsed <answer> (IoU for REC, scaled mAP for OVD/ISR)",
    )
    register(
        "format",
        _factory("syngrpo.rewards", "FormatReward", "reward 'format'"),
        description="R_format: 1 when every tag the prompt asked for is present once and in order",
    )


@hookimpl
def register_advantage_estimators(register):
    register(
        "grpo",
        _factory("syngrpo.losses", "GRPOAdvantage", "advantage estimator 'grpo'"),
        description="(r - mean) / (std + eps) per group (eq. 1); options: eps, std",
    )
    register(
        "dr_grpo",
        _factory("syngrpo.losses", "DrGRPOAdvantage", "advantage estimator 'dr_grpo'"),
        description="Dr. GRPO: r - mean per group, no std division",
    )
    register(
        "mc_grpo",
        _factory("syngrpo.losses", "MCGRPOAdvantage", "advantage estimator 'mc_grpo'"),
        description="MC-GRPO: (r - median) / (MAD + eps), G+1 rollouts with the median one dropped",
    )


@hookimpl
def register_policy_losses(register):
    register(
        "grpo",
        _factory("syngrpo.losses", "GRPOLoss", "policy loss 'grpo'"),
        description="clipped surrogate + beta * KL(k3); options: eps_low, eps_high, beta, aggregation, max_tokens",
    )
    register(
        "entropy_loss",
        _factory("syngrpo.losses", "EntropyLoss", "policy loss 'entropy_loss'"),
        description="grpo minus coef * token entropy (paper baseline 'GRPO + Entropy Loss')",
    )
    register(
        "entropy_advantage",
        _factory("syngrpo.losses", "EntropyAdvantageLoss", "policy loss 'entropy_advantage'"),
        description="grpo on advantages + min(alpha*H, |A|/kappa) (paper baseline 'GRPO + Entropy Adv.')",
    )
