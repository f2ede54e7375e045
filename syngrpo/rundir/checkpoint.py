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

A checkpoint is written into a temporary directory and renamed when complete,
so a crash while saving never leaves a half checkpoint behind ``latest``.  A file
damaged later (a disk error, a copy cut short) is found by :func:`checkpoint_problem`
without loading anything large, and :func:`latest_checkpoint` then falls back to
the newest intact checkpoint, naming the broken file.

Loading runs no code from the files: ``optimizer.pt`` is read with ``weights_only=True``
(numpy's RNG array allowed), DCP's tensors likewise, and DCP's ``.metadata`` -- a pickle
that DCP itself reads with a plain ``pickle.load`` -- through :class:`_MetadataUnpickler`,
which admits DCP's metadata classes, ``torch.Size``, dtypes and paths only.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import random
import shutil
import struct
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
TORCH_FILE = "optimizer.pt"
MODEL_DIR = "model"
#: the DCP directory of a sharded checkpoint (model + optimizer state, one file per rank that wrote it)
SHARDED_DIR = "sharded"
DCP_METADATA = ".metadata"


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
        why = _sharded_problem(ckpt / SHARDED_DIR)
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


def _sharded_problem(directory: Path) -> str | None:
    """Why a DCP directory is damaged: its ``.metadata`` must read (safely) and every file it names must hold
    the bytes it says they hold; no tensor is loaded."""
    meta = directory / DCP_METADATA
    try:
        metadata = read_dcp_metadata(directory)
    except FileNotFoundError:
        return f"{meta}: missing (the sharded save did not finish)"
    except Exception as exc:  # a truncated or foreign pickle: whatever it raises, the checkpoint is unusable
        return f"{meta}: unreadable ({type(exc).__name__}: {exc})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), int(info.offset) + int(info.length))
    if not needed:
        return f"{meta}: names no data files"
    for name, size in sorted(needed.items()):
        path = directory / name
        if not path.is_file():
            return f"{path}: missing"
        if path.stat().st_size < size:
            return f"{path}: {path.stat().st_size} bytes where the metadata needs {size} (truncated?)"
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


# ---- sharded checkpoints (torch.distributed.checkpoint) -------------------------------------------------


def is_sharded(checkpoint: str | Path) -> bool:
    """Whether a checkpoint keeps its weights and optimizer state in ``sharded/`` (DCP)."""
    return (Path(checkpoint) / SHARDED_DIR / DCP_METADATA).is_file()


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` admitting only what DCP puts there.

    DCP's own ``FileSystemReader.read_metadata`` calls ``pickle.load``: a crafted ``.metadata`` would
    run any code it names.  The metadata holds dataclasses of ``torch.distributed.checkpoint.metadata``
    (``Metadata``, ``TensorStorageMetadata``, ``ChunkStorageMetadata``, ``MetadataIndex`` ...), the
    filesystem's ``_StorageInfo``, ``torch.Size``, dtypes, a layout by name and the checkpoint's path.
    """

    MODULES = ("torch.distributed.checkpoint.metadata",)
    NAMES = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
             ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
             ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if (module, name) in self.NAMES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in self.MODULES:
            found = super().find_class(module, name)
            if isinstance(found, type):  # classes (dataclasses, enums), never a function
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a DCP .metadata file")


def read_dcp_metadata(directory: str | Path) -> Any:
    """The ``Metadata`` of a DCP directory, unpickled by :class:`_MetadataUnpickler`."""
    data = (Path(directory) / DCP_METADATA).read_bytes()
    return _MetadataUnpickler(io.BytesIO(data)).load()


def _dcp_reader(directory: str | Path) -> Any:
    """A DCP ``FileSystemReader`` that reads ``.metadata`` through :func:`read_dcp_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata = read_dcp_metadata(self.path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(directory))


def _dcp_planner() -> Any:
    """DCP's default load planner, reading the non-tensor entries (the optimizer's param groups: numbers,
    tuples, names) with ``weights_only=True`` where DCP's own uses ``weights_only=False``."""
    import torch
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:  # the entry's place in the nested state, as DCP's own planner puts it
                _set_nested(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return SafePlanner()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every single-process save/load (no process group) that it assumes one process: it does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        yield


def save_sharded(directory: str | Path, model: Any, optimizer: Any | None, *, process_group: Any | None = None) -> None:
    """Write the model's (and optimizer's) state as DCP shards into ``directory``: every rank its own slices.

    A collective over ``process_group`` (default: the default group; none in a single process).  Keys are
    parameter names (``get_state_dict``), so any strategy and any number of ranks can load them.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    with _single_process_quiet():
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(directory)), process_group=process_group,
                 no_dist=not dist.is_initialized())


def load_sharded(directory: str | Path, model: Any, optimizer: Any | None, *, process_group: Any | None = None) -> None:
    """Load :func:`save_sharded`'s state into ``model`` (and ``optimizer``) as they are held now.

    DCP reads, on each rank, the parts of the saved slices that overlap this rank's slices: the
    checkpoint resumes under any number of ranks (FSDP re-slices it), or in one process (whole tensors).
    A collective over ``process_group`` when a process group exists.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer)  # the optimizer's state initialised
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    with _single_process_quiet():
        dcp.load(state, storage_reader=_dcp_reader(directory), planner=_dcp_planner(), process_group=process_group,
                 no_dist=not dist.is_initialized())
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        set_model_state_dict(model, state["model"])


def read_sharded(directory: str | Path, key: str) -> dict[str, Any]:
    """The whole of ``key`` (``"model"`` or ``"optim"``) of a DCP directory as full tensors, in this process.

    The template is built from the metadata (each tensor's full size and dtype, each entry's place in
    the nested state), then filled by DCP without a process group: the consolidation of a sharded
    checkpoint, in memory.
    """
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = read_dcp_metadata(directory)
    template: dict[str, Any] = {}
    for flat, entry in metadata.state_dict_metadata.items():
        path = (metadata.planner_data or {}).get(flat) or tuple(flat.split(".", 1))
        if path[0] != key:
            continue
        if isinstance(entry, TensorStorageMetadata):
            value: Any = torch.empty(entry.size, dtype=entry.properties.dtype)
        else:
            value = None  # a pickled entry (param-group settings), filled by the planner
        _set_nested(template, path, value)
    if key not in template:
        raise KeyError(f"{directory}: the sharded checkpoint holds no {key!r} state")
    with _single_process_quiet():
        dcp.load(template, storage_reader=_dcp_reader(directory), planner=_dcp_planner(), no_dist=True)
    return template[key]


def _set_nested(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """``root[path[0]][path[1]]... = value``, creating dicts (and lists where the next key is an index)."""
    node: Any = root
    for part, nxt in zip(path[:-1], path[1:], strict=True):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            while len(node) <= part:
                node.append(None)
            if node[part] is None:
                node[part] = empty
            node = node[part]
        else:
            node = node.setdefault(part, empty)
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def consolidated_model_state(checkpoint: str | Path) -> dict[str, Any]:
    """The full model state (float32 masters) of a sharded checkpoint, keyed as ``save_pretrained`` keys it."""
    return read_sharded(Path(checkpoint) / SHARDED_DIR, "model")


def consolidated_optimizer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The full optimizer state of a sharded checkpoint, keyed by parameter name (the gathered format)."""
    return read_sharded(Path(checkpoint) / SHARDED_DIR, "optim")

