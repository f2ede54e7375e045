"""Entry-point module of the ``remote`` and ``reward_model`` rewards; imports neither aiohttp nor torch.

An option a reward does not take is a :class:`~syngrpo.errors.ConfigError` listing those it does.
"""

from __future__ import annotations

import importlib
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import keyword_options


def _build(module: str, cls_name: str, name: str, options: dict[str, Any]) -> Any:
    cls = getattr(importlib.import_module(module), cls_name)
    unknown = sorted(set(options) - keyword_options(cls))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for reward {name!r}; it takes: "
                          f"{', '.join(sorted(keyword_options(cls)))}")
    return cls(**options)


def remote_reward(**options):
    """POST completions + samples in batches to a reward service (timeouts, retries, failure policy)."""
    return _build("syngrpo_rewards.remote", "RemoteReward", "remote", options)


def reward_model_reward(**options):
    """A sequence-classification model scores prompt + completion (optionally on its own device)."""
    return _build("syngrpo_rewards.reward_model", "RewardModelReward", "reward_model", options)


@hookimpl
def register_rewards(register):
    register("remote", remote_reward)
    register("reward_model", reward_model_reward)
