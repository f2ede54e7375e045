"""A run's samples from its config: the dataset file (or Hugging Face dataset) a split names, or toy data.

The trainer, ``syngrpo eval``, ``syngrpo sft`` and offline generation all read their splits here, so
``data.max_train_samples``, ``eval.max_samples``, the image roots and ``data.format`` mean one thing
everywhere.  A source in another format (``data.format: refer``, ``coco``, ``3dfront`` ...) is read by
its dataset-format plugin into ``<run dir>/data/formats/<split>/records.jsonl`` once, then loaded by the
task like any of its own files (:func:`syngrpo.data.formats.materialize_format`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from syngrpo.config import TrainConfig
from syngrpo.data.formats import materialize_format
from syngrpo.data.hf import is_dataset_source, materialize
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from syngrpo.types import Sample


def load_split(cfg: TrainConfig, task: Any, split: str, run_dir: str | Path, *, subdir: str = "",
               registry: Any = None) -> list[Sample]:
    """The ``train`` or ``eval`` samples a config names: a dataset file, or toy data drawn into the run dir.

    ``registry`` finds ``data.format``'s reader (default: the installed plugins).
    """
    path = cfg.data.train if split == "train" else (cfg.eval.split or cfg.data.eval)
    if path:
        image_root = cfg.data.image_root_of(split)
        fmt, options, fmt_split = cfg.data.format_of(split)
        if fmt:  # a dataset format read in place: its records written once into the run directory
            path = str(materialize_format(registry or get_registry(), fmt, path,
                                          Path(run_dir) / "data" / "formats" / subdir / split, options=options,
                                          split=fmt_split, image_root=image_root, task=cfg.data.task))
            image_root = None  # the records' image paths are absolute or relative to their file
        elif is_dataset_source(path):  # Hugging Face datasets: rows -> the task's own records, images as files
            path = str(materialize(path, Path(run_dir) / "data" / "hf" / subdir / split, columns=cfg.data.columns,
                                   image_root=image_root))
            image_root = None
        samples = task.load(path, image_root=image_root)
    else:
        toy = cfg.data.toy
        out = (Path(cfg.data.toy_dir) if cfg.data.toy_dir else Path(run_dir) / "data") / subdir
        samples = task.make_toy_dataset(out / split, n=toy.n_train if split == "train" else toy.n_eval,
                                        seed=toy.seed, split=split, image_size=toy.image_size, **toy.options)
    if split == "train" and cfg.data.max_train_samples and len(samples) > cfg.data.max_train_samples:
        # the paper trains on 2,000 samples drawn at random from each training set
        samples = random.Random(cfg.seed).sample(samples, cfg.data.max_train_samples)
    if split == "eval" and cfg.eval.max_samples:
        samples = samples[: cfg.eval.max_samples]
    if not samples:
        raise ConfigError(f"the {split} split is empty ({path or 'toy data'})")
    return samples
