"""Checkpoints that hold *all* of a run's state, so ``--resume`` continues exactly.

::

    <run dir>/checkpoints/
      step-000040/
        model/               model.save_pretrained (safetensors) + processor.save_pretrained
        trainer_state.json   step, data pool (position, replaced samples, jobs in flight),
                             diversity smoother, counters: JSON, readable
        optimizer.pt         optimizer and scheduler state, RNG states of python / numpy / torch
      latest                 name of the newest complete checkpoint

A checkpoint is written into a temporary directory and renamed when complete,
so a crash while saving never leaves a half checkpoint behind ``latest``.  A file
damaged later (a disk error, a copy cut short) is found by :func:`checkpoint_problem`
without loading anything large, and :func:`latest_checkpoint` then falls back to
the newest intact checkpoint, naming the broken file.
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
) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; keep only the ``keep_last`` newest.

    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()``
    (a sharded run passes the full states it gathered on rank 0).
    """
    import torch

    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / (final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
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
    from syngrpo.errors import ConfigError

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
    """``(trainer_state.json, optimizer.pt contents)`` of a checkpoint directory."""
    import torch

    ckpt = Path(checkpoint)
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    # Our own file: it holds RNG states (numpy arrays, python tuples) that weights_only refuses.
    blob = torch.load(ckpt / TORCH_FILE, map_location="cpu", weights_only=False)
    return state, blob


def model_dir(checkpoint: str | Path) -> Path:
    """Where a checkpoint keeps its ``save_pretrained`` model and processor."""
    return Path(checkpoint) / MODEL_DIR
