"""The supervised warm start, written once: the trainer (``sft`` section) and the study both run this recipe.

A freshly built policy writes noise, every reward of a group is 0 and GRPO has nothing to learn from
(:mod:`syngrpo.train.sft`).  The warm start is, in order:

1. **vision pre-training** (``vision_pretrain.steps`` > 0): the dense centre-token objective of
   :mod:`syngrpo.train.vision_pretrain` on images of a split of their own, a stand-in for the pretrained
   vision encoder the paper starts from (docs/study.md);
2. ``plain_steps`` SFT steps in the ``plain`` response format, when the run writes ``syn``: a third of the
   tokens per step, and the localisation they teach carries over;
3. ``steps`` SFT steps in the run's own response format;
4. the model, its processor and ``sft_stats.json`` saved in one folder (``<run>/sft``, the study's
   ``sft/``): what RL, the reference model or a later run starts from.

:func:`run_warm_start` is that recipe on the samples it is given; :func:`warm_start_run` is the trainer's
driver, which draws the toy splits a training config asks for (:func:`toy_split`).  The study draws its
own splits and calls :func:`run_warm_start` (:func:`syngrpo.experiments.study.warm_start`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syngrpo.config import TrainConfig
from syngrpo.rundir.progress import phase
from syngrpo.train.sft import run_sft
from syngrpo.train.vision_pretrain import pretrain_vision
from syngrpo.types import Sample


@dataclass(frozen=True)
class WarmStartRecipe:
    """The settings of one warm start (a training config's ``sft`` section, or the study's)."""

    steps: int
    lr: float
    batch_size: int
    answer_weight: float = 1.0
    plain_steps: int = 0
    vision_steps: int = 0
    vision_lr: float = 3e-3
    vision_batch_size: int = 32
    object_labels: bool = False

    @classmethod
    def of(cls, sft: Any, vision: Any) -> WarmStartRecipe:
        """From an ``sft`` section and a ``vision_pretrain`` section: a training config's
        (``cfg.sft``, ``cfg.sft.vision_pretrain``) and the study's (``cfg.sft``, ``cfg.vision_pretrain``)
        name these settings alike."""
        return cls(steps=sft.steps, lr=sft.lr, batch_size=sft.batch_size, answer_weight=sft.answer_weight,
                   plain_steps=sft.plain_steps, vision_steps=vision.steps, vision_lr=vision.lr,
                   vision_batch_size=vision.batch_size, object_labels=vision.object_labels)


@dataclass
class WarmStart:
    """What a warm start did: the run-format SFT's statistics, the plain-format ones, vision pre-training's."""

    sft: dict[str, Any]
    plain: dict[str, Any] | None = None
    vision: dict[str, Any] | None = None
    seconds: float = 0.0
    #: the format the policy answers in now (the last SFT's): ``rollout.response_format: auto`` reads it back
    response_format: str | None = None

    @property
    def sft_seconds(self) -> float:
        """Seconds of SFT steps, both formats (vision pre-training apart)."""
        return self.sft["seconds"] + (self.plain["seconds"] if self.plain else 0.0)

    def stats(self) -> dict[str, Any]:
        """What ``sft_stats.json`` holds (:mod:`syngrpo.rundir.summary` reads it)."""
        return {**self.sft, "vision_pretrain": self.vision, "plain": self.plain,
                "response_format": self.response_format}

    def save(self, bundle: Any, folder: str | Path) -> Path:
        """The warm-started model (``save_pretrained``), its processor and ``sft_stats.json`` in ``folder``."""
        out = Path(folder)
        bundle.model.save_pretrained(str(out), safe_serialization=True)
        bundle.processor.save_pretrained(str(out))
        (out / "sft_stats.json").write_text(json.dumps(self.stats(), indent=1), encoding="utf-8")
        return out

    def summary(self) -> str:
        """One line for the run log."""
        text = (f"SFT warm start: {self.sft['steps']} steps in {self.seconds:.0f} s, "
                f"loss {self.sft.get('loss_first', float('nan')):.3f} -> "
                f"{self.sft.get('loss_mean_last10', float('nan')):.3f}")
        if self.vision is not None:
            text += (f" (after {self.vision['steps']} steps of vision pre-training, object tokens "
                     f"{100 * self.vision['object_token_accuracy']:.0f} % right)")
        return text


def run_warm_start(bundle: Any, task: Any, samples: Sequence[Sample], recipe: WarmStartRecipe, *, mode: str,
                   seed: int, pretrain: Sequence[Sample] | None = None, precision: Any | None = None,
                   progress: bool = False, progress_interval_s: float | None = None) -> WarmStart:
    """The recipe of the module doc on ``bundle``, in place (saving is :meth:`WarmStart.save`).

    ``samples`` are the SFT samples, ``pretrain`` the vision pre-training's (needed when
    ``recipe.vision_steps`` > 0), ``mode`` the run's response format; ``precision`` (a
    :class:`~syngrpo.scale.precision.Precision`; default float32) is the forward's, as in RL.
    ``progress``: each part shows a bar on a terminal, else a plain line at least every
    ``progress_interval_s`` seconds (:mod:`syngrpo.rundir.progress`).
    """
    t0 = time.perf_counter()
    vision = None
    family = getattr(bundle, "family", None)
    if recipe.vision_steps and not getattr(family, "dense_vision_pretrain", True):
        logging.getLogger(__name__).warning(
            "sft.vision_pretrain skipped: it trains a patch grid's tokens, and the %s family's images are not one "
            "(set sft.vision_pretrain.steps=0 to silence this)", family.name)
    elif recipe.vision_steps:
        if not pretrain:
            raise ValueError("vision pre-training needs images of its own (pretrain=...)")
        vision = pretrain_vision(bundle, task, pretrain, steps=recipe.vision_steps, lr=recipe.vision_lr,
                                 batch_size=recipe.vision_batch_size, seed=seed, object_labels=recipe.object_labels,
                                 progress=progress, progress_interval_s=progress_interval_s)

    def sft(fmt: str, steps: int) -> dict[str, Any]:
        return run_sft(bundle, task, samples, steps=steps, lr=recipe.lr, batch_size=recipe.batch_size, mode=fmt,
                       seed=seed, answer_weight=recipe.answer_weight, precision=precision, progress=progress,
                       progress_interval_s=progress_interval_s, desc=f"SFT ({fmt} format)")

    plain = sft("plain", recipe.plain_steps) if recipe.plain_steps and mode != "plain" else None
    result = sft(mode, recipe.steps)
    return WarmStart(sft=result, plain=plain, vision=vision, seconds=time.perf_counter() - t0, response_format=mode)


def toy_split(cfg: TrainConfig, task: Any, run_dir: str | Path, split: str, n: int,
              styles: Sequence[str]) -> list[Sample]:
    """``n`` toy images of a split of their own (``data.toy`` settings) beside the train and eval splits,
    shared among background ``styles`` (each style then a split of its own: ``<split>-<style>``)."""
    toy = cfg.data.toy
    out = Path(cfg.data.toy_dir) if cfg.data.toy_dir else Path(run_dir) / "data"
    if list(styles) == ["plain"]:  # the default: no style argument, which not every task's generator takes
        return task.make_toy_dataset(out / split, n=n, seed=toy.seed, split=split, image_size=toy.image_size,
                                     **toy.options)
    k = len(styles)
    return [s for i, style in enumerate(styles)
            for s in task.make_toy_dataset(out / f"{split}-{style}", n=n // k + (i < n % k), seed=toy.seed,
                                           split=f"{split}-{style}", image_size=toy.image_size,
                                           **{**toy.options, "style": style})]


def warm_start_run(cfg: TrainConfig, bundle: Any, task: Any, train_samples: Sequence[Sample], run_dir: str | Path,
                   *, precision: Any, folder: str | Path) -> WarmStart:
    """The trainer's warm start: the splits ``cfg.sft`` asks for, the recipe, the result saved in ``folder``.

    Vision pre-training draws a ``pretrain`` split of its own; SFT trains on an ``sft`` split of its own
    when ``sft.n_images`` is set, else on the train split.  It runs on the unsharded policy (rank 0's,
    before FSDP shards it), in the run's precision: autocast over the float32 masters.
    """
    sft, vp = cfg.sft, cfg.sft.vision_pretrain
    shown = {"enabled": cfg.logging.progress, "interval_s": cfg.logging.progress_interval_s}
    with phase("drawing the warm start's toy images", **shown):
        pretrain = toy_split(cfg, task, run_dir, "pretrain", vp.n_images, vp.styles) if vp.steps else None
        samples = toy_split(cfg, task, run_dir, "sft", sft.n_images, sft.styles) if sft.n_images else train_samples
    result = run_warm_start(bundle, task, samples, WarmStartRecipe.of(sft, vp), mode=cfg.response_mode,
                            seed=cfg.seed, pretrain=pretrain, precision=dataclasses.replace(precision, sharded=False),
                            progress=cfg.logging.progress, progress_interval_s=cfg.logging.progress_interval_s)
    with phase(f"saving the warm start to {folder}", **shown):
        result.save(bundle, folder)
    return result
