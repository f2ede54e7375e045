"""Checkpoints that hold *all* of a run's state, so ``--resume`` continues exactly.

::

    <run dir>/checkpoints/
      step-000040/
        model/               model.save_pretrained (safetensors) + processor.save_pretrained
        trainer_state.json   step, data pool (position, replaced samples, jobs in flight),
                             diversity smoother, counters: JSON, readable
        optimizer.pt         optimizer and scheduler state, RNG states of python / numpy / torch
      latest                 name of the newest complete checkpoint

A run sharded with FSDP writes its weights and optimizer state **sharded** instead
(``torch.distributed.checkpoint``, DCP): every rank writes its own shards, in parallel,
and nobody gathers a whole model::

      step-000040/
        sharded/             .metadata + __<rank>_0.distcp: {"model": float32 masters, "optim": AdamW
                             state}, both keyed by parameter name, in each rank's slices
        model/               config.json, generation_config.json, processor (no weights)
        trainer_state.json   as above
        optimizer.pt         scheduler, RNG states, precision (the optimizer is in sharded/)

DCP re-slices on load, so such a checkpoint resumes on any number of ranks, or in one
process; :func:`consolidated_model_state` reads the whole model from it for ``syngrpo
eval`` / ``syngrpo export`` (in memory, nothing written).  Checkpoints of the first
layout (every strategy before, and ``parallel.checkpoint: full``) load as they always did.
The ``sharded/`` directory is read and written by :mod:`syngrpo.rundir.sharded_checkpoint`
(this module re-exports its public names): the layout, ``latest`` and the checks live here.

A checkpoint is written into a temporary directory and renamed when complete,
so a crash while saving never leaves a half checkpoint behind ``latest``.  A file
damaged later (a disk error, a copy cut short) is found by :func:`checkpoint_problem`
without loading anything large, and :func:`latest_checkpoint` then falls back to
the newest intact checkpoint, naming the broken file.

Loading runs no code from the files: ``optimizer.pt`` is read with ``weights_only=True``
(numpy's RNG array allowed), DCP's tensors likewise, and DCP's ``.metadata`` -- a pickle
that DCP itself reads with a plain ``pickle.load`` -- through
:class:`~syngrpo.rundir.sharded_checkpoint._MetadataUnpickler`, which admits DCP's metadata
classes, ``torch.Size``, dtypes and paths only.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError
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
    sharded_problem,
)

# the sharded reader and writer moved to syngrpo.rundir.sharded_checkpoint; these paths stay importable
__all__ = [
    "CHECKPOINT_DIR", "DCP_METADATA", "MODEL_DIR", "SHARDED_DIR", "STATE_FILE", "TORCH_FILE", "capture_rng_state",
    "checkpoint_name", "checkpoint_problem", "consolidated_model_state", "consolidated_optimizer_state",
    "is_sharded", "latest_checkpoint", "list_checkpoints", "load_sharded", "load_state", "model_dir",
    "prepare_checkpoint", "prune_checkpoints", "read_dcp_metadata", "read_sharded", "restore_rng_state",
    "run_dir_of", "save_checkpoint", "save_sharded",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
TORCH_FILE = "optimizer.pt"
MODEL_DIR = "model"


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
) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; keep only the ``keep_last`` newest.

    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()``
    (a run sharded with the gathered format passes the full states it gathered on rank 0).
    ``sharded``: the weights and optimizer state are already in the temporary directory's
    ``sharded/`` (:func:`prepare_checkpoint`, :func:`save_sharded`); ``model/`` then gets the
    config and processor only.
    """
    import torch

    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    if sharded:
        tmp = _tmp_dir(run_dir, step)
        if not (tmp / SHARDED_DIR / DCP_METADATA).is_file():
            raise FileNotFoundError(f"{tmp / SHARDED_DIR}: no sharded state written (save_sharded first)")
        _save_model_files(model, tmp / MODEL_DIR)
    else:
        tmp = prepare_checkpoint(run_dir, step)
        weights = {"state_dict": model_state} if model_state is not None else {}
        model.save_pretrained(str(tmp / MODEL_DIR), safe_serialization=True, **weights)
    if processor is not None:
        processor.save_pretrained(str(tmp / MODEL_DIR))
    torch.save(
        {
            "optimizer": optimizer_state if optimizer_state is not None
            else (optimizer.state_dict() if optimizer is not None else None),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng_state(),
            **(extra_torch or {}),
        },
        tmp / TORCH_FILE,
    )
    (tmp / STATE_FILE).write_text(json.dumps({"step": int(step), **state}, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (root / "latest").write_text(final.name + "\n", encoding="utf-8")
    if keep_last is not None:
        prune_checkpoints(run_dir, keep_last)
    return final


def _save_model_files(model: Any, directory: Path) -> None:
    """What ``save_pretrained`` writes besides the weights (config, generation config): the weights are sharded.

    ``model`` is the transformers model itself: FSDP2 shards a model in place, so a sharded run's model is
    never under a wrapper (and LoRA, which would wrap it, is refused with FSDP).
    """
    base = model
    directory.mkdir(parents=True, exist_ok=True)
    for part in (getattr(base, "config", None), getattr(base, "generation_config", None)):
        if part is not None and hasattr(part, "save_pretrained"):
            part.save_pretrained(str(directory))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp")
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def _safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is damaged (its header must describe exactly the bytes that follow)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated header"
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            return f"unreadable header ({exc})"
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{size} bytes where the header describes {expected} (truncated?)"
    return None


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """The first damaged file of a checkpoint, as ``"<path>: <why>"``, or ``None`` when it looks intact.

    Cheap: JSON files are parsed, ``optimizer.pt``'s zip directory (at its end) is read, and each
    safetensors header is checked against the file's size; no tensor is loaded.
    """
    ckpt = Path(checkpoint)
    state = ckpt / STATE_FILE
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{state}: {exc}"
    blob = ckpt / TORCH_FILE
    try:
        with zipfile.ZipFile(blob) as zf:
            if not zf.namelist():
                return f"{blob}: empty archive"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{blob}: {exc} (truncated or damaged)"
    model = ckpt / MODEL_DIR
    if not model.is_dir():
        return f"{model}: missing"
    if is_sharded(ckpt) or (ckpt / SHARDED_DIR).exists():
        why = sharded_problem(ckpt / SHARDED_DIR)
        if why:
            return why
    for path in sorted(model.iterdir()):
        try:
            if path.suffix == ".safetensors":
                why = _safetensors_problem(path)
                if why:
                    return f"{path}: {why}"
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{path}: {exc}"
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete and intact checkpoint of a run directory (``None`` when there is none).

    A damaged checkpoint is skipped with a warning that names the broken file, so ``--resume``
    continues from the one before it.  ``run_dir`` may also be a checkpoint directory itself;
    then a damage is a :class:`~syngrpo.errors.ConfigError` naming the file.
    """
    p = Path(run_dir)
    if (p / STATE_FILE).is_file():
        why = checkpoint_problem(p)
        if why:
            raise ConfigError(f"checkpoint {p} is damaged: {why}; resume from its run directory to fall back "
                              "to an earlier checkpoint")
        return p
    root = p / CHECKPOINT_DIR
    candidates = list(reversed(list_checkpoints(run_dir)))
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text(encoding="utf-8").strip()
        if (named / STATE_FILE).is_file():
            candidates = [named] + [c for c in candidates if c != named]
    broken = []
    for ckpt in candidates:
        why = checkpoint_problem(ckpt)
        if why is None:
            if broken:
                log.warning("resuming from %s: the newer checkpoint(s) are damaged: %s", ckpt, "; ".join(broken))
            return ckpt
        log.warning("checkpoint %s is damaged, skipped: %s", ckpt.name, why)
        broken.append(why)
    if broken:
        raise ConfigError(f"every checkpoint under {root} is damaged: " + "; ".join(broken))
    return None


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint belongs to."""
    return Path(checkpoint).resolve().parent.parent


def load_state(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state.json, optimizer.pt contents)`` of a checkpoint directory.

    ``optimizer.pt`` is read with ``weights_only=True``: tensors, containers and numbers, plus the
    numpy array of numpy's RNG state (allowed by name); nothing in it can run code.
    """
    import torch

    ckpt = Path(checkpoint)
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    with torch.serialization.safe_globals(_numpy_rng_globals()):
        blob = torch.load(ckpt / TORCH_FILE, map_location="cpu", weights_only=True)
    return state, blob


def _numpy_rng_globals() -> list[Any]:
    """What unpickling ``np.random.get_state()``'s uint32 array needs (numpy 1.x and 2.x names)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    # a checkpoint pickled under numpy 1.x names numpy.core.multiarray._reconstruct; numpy 2 moved it to _core
    return [np.ndarray, np.dtype, reconstruct, type(np.dtype(np.uint32)),
            (reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct")]


def model_dir(checkpoint: str | Path) -> Path:
    """Where a checkpoint keeps its ``save_pretrained`` model (or, sharded, its config) and processor."""
    return Path(checkpoint) / MODEL_DIR
