"""Checkpoints that hold *all* of a run's state, so ``--resume`` continues exactly.

::

    <run dir>/checkpoints/
      step-000040/
        model/               model.save_pretrained (safetensors) + processor.save_pretrained
        trainer_state.json   step, data pool (position, replaced samples, jobs in flight),
                             diversity smoother, counters: JSON, readable
        optimizer.safetensors  optimizer and scheduler state, RNG states of python / numpy / torch:
                             tensors + JSON, no pickle (:mod:`syngrpo.rundir.safe_state`)
        manifest.json        every file's size and SHA-256, and whether the save found NaN (written last)
      latest                 name of the newest complete checkpoint

A run sharded with FSDP writes its weights and optimizer state **sharded** instead
(``torch.distributed.checkpoint``, DCP): every rank writes its own shards, in parallel,
and nobody gathers a whole model::

      step-000040/
        sharded/             .metadata + __<rank>_0.distcp: {"model": float32 masters, "optim": AdamW
                             state}, both keyed by parameter name, in each rank's slices
        model/               config.json, generation_config.json, processor (no weights)
        trainer_state.json, manifest.json   as above
        optimizer.safetensors  scheduler, RNG states, precision (the optimizer is in sharded/)

DCP re-slices on load, so such a checkpoint resumes on any number of ranks, or in one
process; :func:`consolidated_model_state` reads the whole model from it for ``syngrpo
eval`` / ``syngrpo export`` (in memory, nothing written).  Checkpoints of the first
layout (every strategy before, and ``parallel.checkpoint: full``) load as they always did.
The ``sharded/`` directory is read and written by :mod:`syngrpo.rundir.sharded_checkpoint`
(this module re-exports its public names): the layout, ``latest`` and the checks live here.

A checkpoint is written into a temporary directory and renamed when complete,
so a crash while saving never leaves a half checkpoint behind ``latest``.  Damage found later
(bit rot, a deleted or truncated file, weights that went NaN before the save) is found by
:func:`~syngrpo.rundir.checkpoint_files.checkpoint_problem` against the manifest written with the
checkpoint, before anything is loaded, and :func:`choose_checkpoint` then falls back to the newest
checkpoint that is whole, naming what was wrong (:mod:`syngrpo.rundir.checkpoint_files`).

Loading runs no code from the files: the state file is safetensors (raw tensors, a JSON header),
an older version's ``optimizer.pt`` is read with ``weights_only=True`` (numpy's RNG array allowed),
DCP's tensors likewise, and DCP's ``.metadata`` -- a pickle that DCP itself reads with a plain
``pickle.load`` -- through :class:`~syngrpo.rundir.sharded_checkpoint._MetadataUnpickler`, which
admits DCP's metadata classes, ``torch.Size``, dtypes and paths only.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.rundir.checkpoint_files import (
    CHECKPOINT_DIR,
    LATEST,
    MANIFEST,
    MODEL_DIR,
    STATE_FILE,
    STATE_TENSORS,
    TORCH_FILE,
    checkpoint_problem,
    load_legacy_state,
    nonfinite_names,
    write_manifest,
)
from syngrpo.rundir.safe_state import load_tree, save_tree
from syngrpo.rundir.sharded_checkpoint import (
    DCP_METADATA,
    SHARDED_DIR,
    consolidated_model_state,
    consolidated_optimizer_state,
    is_sharded,
    load_sharded,
    read_dcp_metadata,
    read_sharded,
    save_sharded,
)

# the sharded reader and writer moved to syngrpo.rundir.sharded_checkpoint; these paths stay importable
__all__ = [
    "CHECKPOINT_DIR", "DCP_METADATA", "MANIFEST", "MODEL_DIR", "SHARDED_DIR", "STATE_FILE", "STATE_TENSORS",
    "TORCH_FILE", "Choice", "capture_rng_state", "checkpoint_name", "checkpoint_problem", "choose_checkpoint",
    "consolidated_model_state", "consolidated_optimizer_state", "is_sharded", "latest_checkpoint",
    "list_checkpoints", "load_sharded", "load_state", "model_dir", "no_checkpoint_message", "prepare_checkpoint",
    "prune_checkpoints", "read_dcp_metadata", "read_sharded", "restore_rng_state", "run_dir_of", "save_checkpoint",
    "save_sharded",
]

log = logging.getLogger(__name__)

#: a checkpoint directory's name (``step-000040``); anything else under checkpoints/ is not one
_NAME = re.compile(r"step-\d{6,}")


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG a training step draws from (python, numpy, torch CPU and CUDA)."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _tmp_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / (checkpoint_name(step) + ".tmp")


def prepare_checkpoint(run_dir: str | Path, step: int) -> Path:
    """The empty temporary directory checkpoint ``step`` is written into (a sharded save's ranks write there
    first, then :func:`save_checkpoint` with ``sharded=True`` completes and renames it)."""
    tmp = _tmp_dir(run_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any,
    processor: Any | None,
    optimizer: Any | None,
    scheduler: Any | None,
    state: dict[str, Any],
    extra_torch: dict[str, Any] | None = None,
    keep_last: int | None = None,
    model_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    sharded: bool = False,
    digests: dict[str, str] | None = None,
    nonfinite: list[str] | None = None,
) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; keep only the ``keep_last`` newest.

    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()``
    (a run sharded with the gathered format passes the full states it gathered on rank 0).
    ``sharded``: the weights and optimizer state are already in the temporary directory's
    ``sharded/`` (:func:`prepare_checkpoint`, :func:`save_sharded`); ``model/`` then gets the
    config and processor only, and ``digests`` / ``nonfinite`` are what the ranks found of their
    shards (SHA-256 by relative path; names of tensors holding NaN or inf).  ``extra_torch``: more
    entries of the state file (precision, engine state), tensors and plain data.

    The manifest is written last: every file's size and SHA-256, and the tensors that are not finite
    (a checkpoint that holds any is never resumed; :func:`choose_checkpoint`).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    optim = optimizer_state if optimizer_state is not None else (optimizer.state_dict() if optimizer else None)
    bad = list(nonfinite or [])
    if sharded:
        tmp = _tmp_dir(run_dir, step)
        if not (tmp / SHARDED_DIR / DCP_METADATA).is_file():
            raise FileNotFoundError(f"{tmp / SHARDED_DIR}: no sharded state written (save_sharded first)")
        _save_model_files(model, tmp / MODEL_DIR)
    else:
        tmp = prepare_checkpoint(run_dir, step)
        weights = {"state_dict": model_state} if model_state is not None else {}
        model.save_pretrained(str(tmp / MODEL_DIR), safe_serialization=True, **weights)
        if hasattr(model, "get_base_model"):  # peft writes the adapters only: the base's config beside them
            _save_model_files(model, tmp / MODEL_DIR)
        bad += nonfinite_names(model_state if model_state is not None else model.state_dict(), "model")
    bad += nonfinite_names(optim or {}, "optimizer")
    if processor is not None:
        processor.save_pretrained(str(tmp / MODEL_DIR))
    save_tree({"optimizer": optim, "scheduler": scheduler.state_dict() if scheduler is not None else None,
               "rng": capture_rng_state(), **(extra_torch or {})}, tmp / STATE_TENSORS)
    (tmp / STATE_FILE).write_text(json.dumps({"step": int(step), **state}, indent=1), encoding="utf-8")
    write_manifest(tmp, digests=digests, nonfinite=bad)
    if bad:
        log.warning("checkpoint %s holds NaN or inf (%s): the run has diverged; --resume will not use it",
                    final.name, ", ".join(bad))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (root / LATEST).write_text(final.name + "\n", encoding="utf-8")
    if keep_last is not None:
        prune_checkpoints(run_dir, keep_last)
    return final


def _save_model_files(model: Any, directory: Path) -> None:
    """What ``save_pretrained`` writes besides the weights (config, generation config): the weights are sharded.

    FSDP2 shards a model in place, so the only wrapper is peft's (LoRA), whose base holds the config.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    directory.mkdir(parents=True, exist_ok=True)
    for part in (getattr(base, "config", None), getattr(base, "generation_config", None)):
        if part is not None and hasattr(part, "save_pretrained"):
            part.save_pretrained(str(directory))
    if hasattr(model, "get_base_model") and not (directory / "adapter_config.json").is_file():
        # a sharded LoRA checkpoint: the adapters' r and alpha, which merging them for eval and export needs
        model.peft_config["default"].save_pretrained(str(directory))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint directories of a run (``step-NNNNNN``, renamed complete), oldest first.

    Whole or not: :func:`choose_checkpoint` checks them (a checkpoint whose ``trainer_state.json`` was
    deleted is listed, so that its damage is named instead of passed over in silence).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)), key=lambda p: p.name)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Keep the ``keep_last`` newest checkpoints, and the newest one whose save found its tensors finite
    (a diverged run's last saves must not push out the one a resume needs)."""
    found = list_checkpoints(run_dir)
    keep = set(found[-keep_last:])
    finite = next((c for c in reversed(found) if not _manifest_nonfinite(c)), None)
    if finite is not None:
        keep.add(finite)
    for old in found:
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _manifest_nonfinite(ckpt: Path) -> bool:
    try:
        return bool(json.loads((ckpt / MANIFEST).read_text(encoding="utf-8")).get("nonfinite"))
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class Choice:
    """The checkpoint :func:`choose_checkpoint` picked (``None``: none) and why it passed over the newer ones."""

    path: Path | None
    #: ``"<checkpoint>: <what is wrong>"`` for every newer checkpoint skipped, newest first
    skipped: list[str] = field(default_factory=list)
    #: what was wrong with ``checkpoints/latest`` (garbage, or naming no checkpoint), if anything
    pointer: str | None = None

    def summary(self) -> str:
        """One line for the run log: what was skipped and why (empty when nothing was)."""
        parts = ([self.pointer] if self.pointer else []) + [f"skipped damaged {s}" for s in self.skipped]
        return "; ".join(parts)


def _read_latest(root: Path) -> tuple[Path | None, str | None]:
    """(the checkpoint ``latest`` names, what is wrong with ``latest``); ``latest`` missing is not a problem."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None, None
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{pointer} is unreadable ({type(exc).__name__}): ignored, the newest checkpoint by step is used"
    if not _NAME.fullmatch(name):
        return None, f"{pointer} holds {name[:40]!r}, not a checkpoint name: ignored, the newest by step is used"
    if not (root / name).is_dir():
        return None, f"{pointer} names {name}, which does not exist: ignored, the newest by step is used"
    return root / name, None


def choose_checkpoint(run_dir: str | Path) -> Choice:
    """The newest checkpoint of a run directory that is whole (:func:`checkpoint_problem`), and what was skipped.

    ``latest`` is tried first, then every checkpoint newest first; each one skipped, and a broken
    ``latest``, is logged as a warning naming the file and what is wrong with it.  ``run_dir`` may be
    a checkpoint directory itself: then any damage is a :class:`~syngrpo.errors.ConfigError` naming it.
    When every checkpoint is damaged that is an error too; when there is none, ``Choice(None)``.
    """
    p = Path(run_dir)
    if (_NAME.fullmatch(p.name) and p.parent.name == CHECKPOINT_DIR) or (p / STATE_FILE).is_file():
        why = checkpoint_problem(p)
        if why:
            raise ConfigError(f"checkpoint {p} is damaged: {why}; resume from its run directory to fall back "
                              "to an earlier checkpoint")
        return Choice(p)
    root = p / CHECKPOINT_DIR
    named, pointer = _read_latest(root)
    if pointer:
        log.warning("%s", pointer)
    candidates = list(reversed(list_checkpoints(p)))
    if named is not None:
        candidates = [named] + [c for c in candidates if c != named]
    skipped: list[str] = []
    for ckpt in candidates:
        why = checkpoint_problem(ckpt)
        if why is None:
            if skipped:
                log.warning("resuming from %s: the newer checkpoint(s) are damaged: %s", ckpt.name, "; ".join(skipped))
            return Choice(ckpt, skipped, pointer)
        log.warning("checkpoint %s is damaged, skipped: %s", ckpt.name, why)
        skipped.append(f"{ckpt.name}: {why}")
    if skipped:
        raise ConfigError(f"every checkpoint under {root} is damaged: " + "; ".join(skipped))
    return Choice(None, [], pointer)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest whole checkpoint of a run directory (``None`` when there is none): :func:`choose_checkpoint`."""
    return choose_checkpoint(run_dir).path


def no_checkpoint_message(where: str | Path) -> str:
    """Why ``--resume WHERE`` has nothing to resume, and what to do instead."""
    root = Path(where) / CHECKPOINT_DIR
    torn = sorted(p.name for p in root.glob("step-*.tmp")) if root.is_dir() else []
    if torn:
        return (f"--resume {str(where)!r}: no checkpoint to resume: {root / torn[-1]} is a save that never "
                "finished (the run stopped while writing its first checkpoint). Nothing was lost that a resume "
                "could restore: start the run again without --resume (the same -c and --out start it at step 0)")
    return (f"--resume {str(where)!r}: no checkpoint there (looked for checkpoints/step-*); the run saved none "
            "yet (logging.save_every), or this is not a run directory: start it without --resume")


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint belongs to."""
    return Path(checkpoint).resolve().parent.parent


def load_state(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state.json, the state file's contents)`` of a checkpoint directory.

    The state file is safetensors (:mod:`syngrpo.rundir.safe_state`): nothing in it is unpickled.  A
    checkpoint of an older version holds ``optimizer.pt`` instead, read with ``weights_only=True``.
    """
    ckpt = Path(checkpoint)
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    if (ckpt / STATE_TENSORS).is_file():
        return state, load_tree(ckpt / STATE_TENSORS)
    return state, load_legacy_state(ckpt / TORCH_FILE)


def model_dir(checkpoint: str | Path) -> Path:
    """Where a checkpoint keeps its ``save_pretrained`` model (or, sharded, its config) and processor."""
    return Path(checkpoint) / MODEL_DIR
