"""A nested training state (optimizer, scheduler, RNG states, precision) as one safetensors file, no pickle.

Why its own format: ``torch.save`` pickles, and even ``torch.load(weights_only=True)`` is an unpickler
-- a restricted one, with a history of bypasses (CVE-2025-32434 ran code through it in torch <= 2.5.1).
``--resume`` reads checkpoints from shared disks and copies; what it reads should hold no pickle at all.
A safetensors file is raw tensor bytes behind a JSON header (the library parses nothing else), so this
module stores every tensor there and the structure around them as JSON in the header's ``__metadata__``:

* dicts, lists, strings, numbers, booleans and ``None`` as themselves (``NaN``/``inf`` as JSON's
  non-standard literals, which Python's ``json`` reads back);
* a tensor as ``{"$t": "<name>"}``, a numpy array (numpy's RNG state) as ``{"$np": "<name>", "dtype": ...}``;
* a tuple as ``{"$tuple": [...]}`` (python's and numpy's RNG states must come back as tuples);
* a dict whose keys are not all strings, or a key that starts with ``$``, as ``{"$dict": [[key, value], ...]}``.

Anything else (a function, an object) cannot be written: :func:`save_tree` names where it sits in the
state, so nothing is silently lost.  Reading (:func:`load_tree`) builds only those types: there is
nothing in the file that could name code to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the ``__metadata__`` entries of a state file
FORMAT_KEY, TREE_KEY = "format", "tree"
FORMAT = "syngrpo-state/1"


class _Encoder:
    """Walks a state, moving tensors into a flat ``{name: tensor}`` and leaving JSON behind."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self._storages: set[int] = set()

    def tensor(self, value: Any) -> str:
        t = value.detach().cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in self._storages:
            t = t.clone()  # safetensors refuses two entries sharing memory
        elif ptr is not None:
            self._storages.add(ptr)
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        return name

    def encode(self, value: Any, where: str) -> Any:
        import numpy as np
        import torch

        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, torch.Tensor):
            return {"$t": self.tensor(value)}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{where}: a numpy array of dtype {value.dtype} cannot be stored")
            wide = value.astype(np.float64 if value.dtype.kind == "f" else np.int64)  # numpy's uint32 RNG key
            return {"$np": self.tensor(torch.from_numpy(np.ascontiguousarray(wide))), "dtype": str(value.dtype)}
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v, f"{where}.{k}") for k, v in value.items()}
            return {"$dict": [[self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
        raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a checkpoint's state file "
                        "(tensors, numpy arrays, numbers, strings, lists, tuples and dicts can)")


def save_tree(tree: dict[str, Any], path: str | Path) -> None:
    """Write ``tree`` (see the module doc for what it may hold) as a safetensors file."""
    from safetensors.torch import save_file

    enc = _Encoder()
    skeleton = enc.encode(tree, "state")
    save_file(enc.tensors, str(path), metadata={FORMAT_KEY: FORMAT, TREE_KEY: json.dumps(skeleton)})


def _decode(node: Any, tensors: Any) -> Any:
    import numpy as np

    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "$t" in node:
        return tensors.get_tensor(node["$t"])
    if "$np" in node:
        return tensors.get_tensor(node["$np"]).numpy().astype(np.dtype(node["dtype"]))
    if "$tuple" in node:
        return tuple(_decode(v, tensors) for v in node["$tuple"])
    if "$dict" in node:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in node["$dict"]}
    return {k: _decode(v, tensors) for k, v in node.items()}


def read_skeleton(path: str | Path) -> tuple[Any, list[str]]:
    """(the JSON structure of a state file, the names of its tensors), without reading a tensor's bytes.

    Raises ``ValueError`` when the file is not a state file of this format.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        names = list(f.keys())
    if meta.get(FORMAT_KEY) != FORMAT or TREE_KEY not in meta:
        raise ValueError(f"not a syngrpo state file (format {meta.get(FORMAT_KEY)!r}, expected {FORMAT!r})")
    return json.loads(meta[TREE_KEY]), names


def load_tree(path: str | Path) -> dict[str, Any]:
    """What :func:`save_tree` wrote: the same nesting, tensors on the CPU."""
    from safetensors import safe_open

    skeleton, _ = read_skeleton(path)
    with safe_open(str(path), framework="pt") as f:
        return _decode(skeleton, f)


def nonfinite_tensors(path: str | Path, *, limit: int = 5) -> list[str]:
    """Names (and NaN/inf counts) of the floating tensors of a safetensors file that hold NaN or inf.

    One tensor in memory at a time; stops after ``limit`` such tensors.  For model weights and state
    files alike: a run that diverged saved them so, and resuming them crashes a few steps later.
    """
    import torch
    from safetensors import safe_open

    bad: list[str] = []
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if not t.is_floating_point():
                continue
            n = int(t.numel() - torch.isfinite(t).sum())
            if n:
                bad.append(f"{name} ({n} of {t.numel()} values NaN or inf)")
                if len(bad) >= limit:
                    break
    return bad

