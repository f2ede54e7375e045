"""Sharded checkpoints: every rank writes and reads its own slices (``torch.distributed.checkpoint``, DCP).

A run sharded with FSDP keeps its weights and optimizer state in a checkpoint's ``sharded/``
directory instead of ``model/`` and ``optimizer.pt`` (the layout: :mod:`syngrpo.rundir.checkpoint`)::

      step-000040/
        sharded/             .metadata + __<rank>_0.distcp: {"model": float32 masters, "optim": AdamW
                             state}, both keyed by parameter name, in each rank's slices

DCP re-slices on load, so such a checkpoint resumes on any number of ranks, or in one process
(:func:`load_sharded`); :func:`consolidated_model_state` reads the whole model from it for ``syngrpo
eval`` / ``syngrpo export`` (in memory, nothing written).

Its own module because it is a reader and a writer of another library's format, with that format's
risks: DCP's ``.metadata`` is a pickle that DCP itself reads with a plain ``pickle.load``, so it is
read here through :class:`_MetadataUnpickler`, which admits DCP's metadata classes, ``torch.Size``,
dtypes and paths only, and DCP's non-tensor entries are read with ``weights_only=True``
(:func:`_dcp_planner`).  :func:`sharded_problem` checks a DCP directory without loading a tensor.
The layout, ``latest`` and the checks of the rest of a checkpoint stay in :mod:`.checkpoint`, which
re-exports the public names of this module.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the DCP directory of a sharded checkpoint (model + optimizer state, one file per rank that wrote it)
SHARDED_DIR = "sharded"
DCP_METADATA = ".metadata"


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


def sharded_problem(directory: Path) -> str | None:
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

