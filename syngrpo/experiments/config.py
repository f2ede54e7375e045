"""The study's configuration: splits, the shared warm start, the RL keys every arm shares, the quick mode.

Loaded once from ``configs/study_rec_toy.yaml`` (or ``-c``), ``--quick`` merges the ``quick`` section over it, and
``--set`` overrides win over both (:func:`load_study_config`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from syngrpo.config.io import StrictModel, apply_overrides, load_config, validate
from syngrpo.errors import ConfigError
from syngrpo.experiments.methods import ARMS

SPLITS = ("val", "test_id", "test_ood")
SPLIT_LABELS = {"val": "Validation (train style)", "test_id": "In-domain test", "test_ood": "Out-of-domain test"}


class StudyData(StrictModel):
    """The toy REC splits; ``options`` go to ``make_rec_toy`` (grid, position_code, n_shapes ...)."""

    seed: int = 0
    image_size: int = Field(112, ge=28)
    n_train: int = Field(300, ge=1)
    n_val: int = Field(64, ge=1)
    n_test: int = Field(120, ge=1)
    train_style: str = "plain"
    #: background styles of the out-of-domain test, never seen in training
    ood_styles: list[str] = Field(default_factory=lambda: ["textured", "cluttered", "ood"])
    options: dict[str, Any] = Field(default_factory=dict)


class StudyPolicy(StrictModel):
    """``build_tiny_policy`` options of the shared starting model."""

    seed: int = 0
    text_hidden: int = 128
    layers: int = 4
    vision_hidden: int = 64
    vision_depth: int = 2
    vocab_size: int = 640


class StudySFT(StrictModel):
    """The warm start every arm starts from."""

    steps: int = Field(600, ge=1)
    #: plain-format steps before ``steps`` syn-format ones: cheaper (shorter targets), they teach the
    #: localisation (the quickstart's recipe, :class:`syngrpo.config.SFTConfig`)
    plain_steps: int = Field(0, ge=0)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    #: loss weight of the answer tokens (``syngrpo.train.sft.sft_loss``)
    answer_weight: float = Field(1.0, gt=0)


class StudyVisionPretrain(StrictModel):
    """Dense pre-training of the random vision tower (:mod:`syngrpo.train.vision_pretrain`) before SFT.

    Stands in for the pretrained encoder the paper starts from; on images of its own
    split (``pretrain``), disjoint from train, val and the tests.  ``steps: 0`` skips it.
    """

    steps: int = Field(300, ge=0)
    n_images: int = Field(1000, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    #: also teach each object's centre token the object's label (``pretrain_vision(object_labels=True)``)
    object_labels: bool = False


class StudyEval(StrictModel):
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(80, ge=1)


class StudyConfig(StrictModel):
    """Everything ``syngrpo study`` needs; ``quick`` is deep-merged over the rest by ``--quick``."""

    #: the task every split, warm start and arm uses (registered name; its toy generator draws the splits)
    task: str = "rec"
    #: the rollout engine that scores the warm start on every split
    engine: str = "hf"
    #: the trainer-to-data-server transport of the arms that synthesize (in-process: no HTTP, ``sync`` waits,
    #: so the same seed gives the same table)
    transport: str = "inprocess"
    #: who describes the images of the offline-generation arm (``grpo_offline``) before training
    describer: str = "template"
    seed: int = 0
    #: seeds per arm (RL seeds ``seed .. seed + seeds - 1``; data and SFT use ``seed``)
    seeds: int = Field(3, ge=1)
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    data: StudyData = Field(default_factory=StudyData)
    policy: StudyPolicy = Field(default_factory=StudyPolicy)
    #: start every arm from this finished warm start (a study's ``sft/`` directory) instead of building one:
    #: the data-size ablation varies the RL train split under one shared warm start
    warm_start: str | None = None
    vision_pretrain: StudyVisionPretrain = Field(default_factory=StudyVisionPretrain)
    sft: StudySFT = Field(default_factory=StudySFT)
    #: TrainConfig keys shared by every arm (nested, as in a ``syngrpo train`` config)
    rl: dict[str, Any] = Field(default_factory=dict)
    eval: StudyEval = Field(default_factory=StudyEval)
    quick: dict[str, Any] = Field(default_factory=dict)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested dicts merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study_config(path: str | Path | None, overrides: Sequence[str] = (), *, quick: bool = False,
                      seeds: int | None = None) -> StudyConfig:
    """The study config: file, the ``quick`` section when asked, then ``--set`` overrides (they win)."""
    cfg = load_config(StudyConfig, path, overrides)
    if quick and cfg.quick:
        merged = deep_merge(load_config(StudyConfig, path).model_dump(), {**cfg.quick, "quick": {}})
        cfg = validate(StudyConfig, apply_overrides(merged, overrides), source=str(path or "study config"))
    if seeds is not None:
        cfg = cfg.model_copy(update={"seeds": int(seeds)})
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; arms are {', '.join(ARMS)}")
    return cfg




def digest(value: Any) -> str:
    """A short stable hash of ``value`` (JSON): finished pieces are reused only when it is unchanged."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
