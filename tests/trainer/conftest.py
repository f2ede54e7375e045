"""Shared fixtures of the trainer tests: tiny real policies, a registry with a test reward, configs.

Two policies, both built once per session:

* ``tiny_policy_dir``: the tiny random Qwen2.5-VL (writes noise: no parsable answer);
* ``sft_policy_dir``: the same after a short SFT on toy REC data, so it writes the
  response format, with descriptions the data server can synthesize from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syngrpo.hookspecs import hookimpl
from syngrpo.testing import registry_with


class LengthReward:
    """A test reward that differs between random completions: their length, capped at 1."""

    def __call__(self, responses, samples, *, task, frames=None):
        return [min(1.0, len(r.text) / 80.0) for r in responses]


class ConstantReward:
    """A test reward that ignores what was written: every completion scores ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, responses, samples, *, task, frames=None):
        return [self.value] * len(responses)


class LengthRewardPlugin:
    @hookimpl
    def register_rewards(self, register):
        register("length", lambda **options: LengthReward(), description="test reward: completion length")
        register("constant", lambda value=0.0: ConstantReward(value),
                 description="test reward: the same value for every completion")


@pytest.fixture(scope="session")
def registry():
    """The installed plugins plus the ``length`` and ``constant`` test rewards."""
    return registry_with(LengthRewardPlugin(), autoload=True)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    from syngrpo.models.tiny_policy import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", seed=0)


@pytest.fixture(scope="session")
def sft_policy_dir(tiny_policy_dir, tmp_path_factory, registry) -> Path:
    """The tiny policy after 100 SFT steps on 8 toy REC images (56 px, seed 0).

    It writes the syn format with descriptions, and on those 8 images (the first 8 of
    ``data.toy`` with seed 0 at 56 px) its sampled boxes are often right and often not:
    groups with a spread of R_acc, so V(q) and the smoothing have something to work on.
    """
    from syngrpo.models.policy import load_policy
    from syngrpo.train.sft import run_sft

    task = registry.create("tasks", "rec")
    data = tmp_path_factory.mktemp("sftdata")
    samples = task.make_toy_dataset(data, n=8, seed=0, split="train", image_size=56)
    bundle = load_policy(tiny_policy_dir)
    run_sft(bundle, task, samples, steps=100, lr=5e-3, batch_size=4, mode="syn", seed=0, progress=False)
    out = tmp_path_factory.mktemp("sft") / "policy"
    bundle.model.save_pretrained(out)
    bundle.processor.save_pretrained(out)
    return out


def overrides(policy: Path, *extra: str, mode: str = "off") -> list[str]:
    """A small, fast config around a local policy (CPU, toy REC at 56 px, 2 prompts x 3 rollouts)."""
    return [
        f"model.policy={policy}",
        "model.device=cpu",
        "model.dtype=float32",
        "data.toy.n_train=8",
        "data.toy.n_eval=4",
        "data.toy.image_size=56",
        "data.toy.options={}",  # the free layout the SFT'd test policy knows, not the quickstart's grid
        "sft.n_images=null",
        "sft.vision_pretrain.steps=0",
        "rollout.num_generations=3",
        "rollout.max_new_tokens=16",
        "optim.batch_size=2",
        "optim.max_steps=2",
        "optim.lr=1e-3",
        f"synthesis.mode={mode}",
        "logging.progress=false",
        "logging.tensorboard=false",
        "logging.plots=false",
        "eval.at_end=false",
        *extra,
    ]


def make_config(policy: Path, *extra: str, mode: str = "off"):
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    return load_config(TrainConfig, None, overrides(policy, *extra, mode=mode))


@pytest.fixture(scope="session")
def config_for():
    """``config_for(policy, *overrides, mode=...)`` -> a validated :class:`TrainConfig`."""
    return make_config


@pytest.fixture(scope="session")
def overrides_for():
    """``overrides_for(policy, *overrides, mode=...)`` -> the ``--set`` list of :func:`config_for`."""
    return overrides
