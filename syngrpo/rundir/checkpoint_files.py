"""What files a checkpoint holds, and whether they are whole: the manifest written with it and its check.

A checkpoint is trusted only when all of it is as it was written (:func:`checkpoint_problem`):

* **present**: the trainer state, the optimizer/RNG state, the model's ``config.json`` and its weights in
  the checkpoint's layout (``model.safetensors`` or its index and shards, LoRA adapters, or DCP's
  ``sharded/``) -- a deleted file is found before a model is built;
* **unchanged**: ``manifest.json``, written last, holds every file's size and SHA-256; a flipped bit
  anywhere (bit rot, a bad copy) is a mismatch naming the file.  Checkpoints of syngrpo versions before
  the manifest are checked without it (structure and finiteness only);
* **parseable**: JSON files parse, safetensors headers describe exactly the bytes that follow, the state
  file is this format's, DCP's ``.metadata`` reads through the safe unpickler;
* **finite**: the weights and optimizer state of the save hold no NaN or inf (checked in memory when
  saving, recorded in the manifest; files without a manifest are scanned) -- a run that diverged before
  a save would otherwise resume and crash a few steps later;
* **no pickle**: a ``.bin``/``.pt``/``.pkl`` file that the manifest does not list is refused (``from_pretrained``
  would load a planted ``pytorch_model.bin``); the one legacy pickle, an older version's ``optimizer.pt``,
  is read with ``torch.load(weights_only=True)`` to check it.

Hashing reads every byte once (``scripts/bench -k whole_check`` measures it against the save); a check that
passed is remembered for the process, keyed by every file's size and mtime, so the CLI and the trainer do
not hash one checkpoint twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from syngrpo.rundir.safe_state import nonfinite_tensors, read_skeleton
from syngrpo.rundir.sharded_checkpoint import SHARDED_DIR, sharded_problem

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
#: optimizer, scheduler, RNG states, precision: tensors + JSON, no pickle (:mod:`syngrpo.rundir.safe_state`)
STATE_TENSORS = "optimizer.safetensors"
#: what versions before the state file wrote instead (``torch.save``); still read, with ``weights_only=True``
TORCH_FILE = "optimizer.pt"
MODEL_DIR = "model"
MANIFEST = "manifest.json"
LATEST = "latest"
#: files that hold pickles; none is trusted unless the manifest lists it
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def checkpoint_files(directory: Path) -> list[str]:
    """Every file of a checkpoint directory but the manifest, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def hash_files(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """SHA-256 of each named file of ``directory`` (a sharded save splits its files between ranks)."""
    return {name: file_sha256(directory / name) for name in names}


def write_manifest(directory: Path, *, digests: Mapping[str, str] | None = None,
                   nonfinite: Iterable[str] = ()) -> Path:
    """``manifest.json``: size and SHA-256 of every file (``digests`` computed elsewhere are taken as they are),
    and the tensors the save found non-finite.  Written last, before the checkpoint is renamed complete."""
    known = dict(digests or {})
    files = {}
    for name in checkpoint_files(directory):
        path = directory / name
        files[name] = {"bytes": path.stat().st_size, "sha256": known.get(name) or file_sha256(path)}
    out = directory / MANIFEST
    out.write_text(json.dumps({"format": 1, "files": files, "nonfinite": list(nonfinite)}, indent=1),
                   encoding="utf-8")
    return out


def nonfinite_names(state: Mapping[str, Any], prefix: str = "", limit: int = 5) -> list[str]:
    """Names of the floating tensors of a (nested) state that hold NaN or inf; a sharded tensor's local part.

    In memory and cheap (one ``isfinite`` per tensor): the check a save records in the manifest.
    """
    import torch

    bad: list[str] = []

    def walk(node: Any, where: str) -> None:
        if len(bad) >= limit:
            return
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, torch.Tensor):
            local = node.to_local() if hasattr(node, "to_local") else node
            if local.is_floating_point() and local.numel() and not bool(torch.isfinite(local).all()):
                bad.append(where)

    walk(state, prefix)
    return bad


# ---- the check --------------------------------------------------------------------------------------
_PASSED: dict[str, tuple[Any, ...]] = {}


def _fingerprint(ckpt: Path) -> tuple[Any, ...]:
    out = []
    for p in sorted(ckpt.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(ckpt).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """The first thing wrong with a checkpoint, as ``"<path>: <why>"``, or ``None`` when it is whole.

    See the module doc for what is checked.  No model is built; weights are read one tensor at a time
    (and only for checkpoints without a manifest).
    """
    ckpt = Path(checkpoint)
    key = str(ckpt.resolve())
    fingerprint = _fingerprint(ckpt) if ckpt.is_dir() else ()
    if _PASSED.get(key) == fingerprint and fingerprint:
        return None
    why = _problem(ckpt)
    if why is None:
        _PASSED[key] = fingerprint
    return why


def _problem(ckpt: Path) -> str | None:
    if not ckpt.is_dir():
        return f"{ckpt}: not a directory"
    state = ckpt / STATE_FILE
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("step"), int):
            return f"{state}: holds no step number"
    except FileNotFoundError:
        return f"{state}: missing"
    except (OSError, ValueError) as exc:
        return f"{state}: unreadable ({exc})"
    manifest = _read_manifest(ckpt)
    if isinstance(manifest, str):
        return manifest
    listed = set(manifest["files"]) if manifest else {TORCH_FILE}  # before manifests: the one pickle written
    for name in checkpoint_files(ckpt):
        if Path(name).suffix in PICKLE_SUFFIXES and name not in listed:
            return (f"{ckpt / name}: a pickle file syngrpo did not write (a checkpoint's weights are safetensors); "
                    "refused, since loading it could run code")
    return (_layout_problem(ckpt) or (_manifest_problem(ckpt, manifest) if manifest else None)
            or _parse_problem(ckpt) or _finite_problem(ckpt, manifest))


def _read_manifest(ckpt: Path) -> dict[str, Any] | str | None:
    """The manifest (``None`` for a checkpoint written before manifests), or the problem reading it."""
    path = ckpt / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError("no file list")
        return data
    except (OSError, ValueError) as exc:
        return f"{path}: unreadable ({exc})"


def _layout_problem(ckpt: Path) -> str | None:
    """Every file the checkpoint's layout needs is there."""
    if not (ckpt / STATE_TENSORS).is_file() and not (ckpt / TORCH_FILE).is_file():
        return f"{ckpt / STATE_TENSORS}: missing (the optimizer, scheduler and RNG state)"
    model = ckpt / MODEL_DIR
    if not (model / "config.json").is_file():
        return f"{model / 'config.json'}: missing"
    if (ckpt / SHARDED_DIR).exists():
        return sharded_problem(ckpt / SHARDED_DIR)
    if (model / "adapter_config.json").is_file():
        needed = ["adapter_model.safetensors"]
    elif (model / "model.safetensors.index.json").is_file():
        try:
            index = json.loads((model / "model.safetensors.index.json").read_text(encoding="utf-8"))
            needed = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            return f"{model / 'model.safetensors.index.json'}: unreadable ({exc})"
    else:
        needed = ["model.safetensors"]
    for name in needed:
        if not (model / name).is_file():
            return f"{model / name}: missing (the weights)"
    return None


def _manifest_problem(ckpt: Path, manifest: dict[str, Any]) -> str | None:
    """Every file the manifest lists is there, with its size and SHA-256."""
    files = manifest["files"]
    total = sum(int(e.get("bytes", 0)) for e in files.values())
    if total > 1 << 30:
        log.info("checking %s: %d files, %.1f GB (SHA-256)", ckpt, len(files), total / 1e9)
    for name, entry in sorted(files.items()):
        path = ckpt / name
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{path}: {size} bytes where {entry.get('bytes')} were written (truncated or overwritten)"
        if file_sha256(path) != entry.get("sha256"):
            return f"{path}: its SHA-256 differs from the one written with it (bit rot or a bad copy)"
    if manifest.get("nonfinite"):
        return (f"{ckpt}: the save found NaN or inf in {', '.join(manifest['nonfinite'])} (the run diverged "
                "before this step)")
    return None


def _parse_problem(ckpt: Path) -> str | None:
    """JSON parses, safetensors headers fit their files, the state file is readable (no tensor loaded)."""
    blob = ckpt / STATE_TENSORS
    if blob.is_file():
        try:
            read_skeleton(blob)
        except Exception as exc:  # noqa: BLE001 - whatever safetensors raises, the file is unusable
            return f"{blob}: unreadable ({type(exc).__name__}: {exc})"
    elif (ckpt / TORCH_FILE).is_file():
        why = _legacy_problem(ckpt / TORCH_FILE)
        if why:
            return why
    for path in sorted((ckpt / MODEL_DIR).iterdir()):
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


def _legacy_problem(path: Path) -> str | None:
    """An older version's ``optimizer.pt``: a ``torch.save`` archive that loads with ``weights_only=True``."""
    try:
        with zipfile.ZipFile(path) as zf:
            if not zf.namelist():
                return f"{path}: empty archive"
            bad = zf.testzip()  # every member's CRC: bit rot inside the archive
            if bad is not None:
                return f"{path}: {bad} fails its CRC (bit rot or a bad copy)"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path}: {exc} (truncated or damaged)"
    try:
        load_legacy_state(path)
    except Exception as exc:  # noqa: BLE001 - an unpickling refusal or a damaged archive: unusable either way
        return f"{path}: does not load as tensors and numbers ({type(exc).__name__}: {exc})"
    return None


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


def _finite_problem(ckpt: Path, manifest: dict[str, Any] | None) -> str | None:
    """NaN or inf in the weights or optimizer state: recorded by the save, or scanned for older checkpoints."""
    if manifest is not None:
        return None  # the save checked the tensors in memory, the checksums say these are those bytes
    files = [p for p in sorted((ckpt / MODEL_DIR).glob("*.safetensors"))]
    if (ckpt / STATE_TENSORS).is_file():
        files.append(ckpt / STATE_TENSORS)
    for path in files:
        bad = nonfinite_tensors(path)
        if bad:
            return f"{path}: NaN or inf in {', '.join(bad)} (the run diverged before this step)"
    return None


def load_legacy_state(path: str | Path) -> dict[str, Any]:
    """An older version's ``optimizer.pt``, read with ``weights_only=True``: tensors, containers and numbers,
    plus numpy's RNG array (its reconstruction function allowed by name); nothing in it can run code."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    rebuild = core.multiarray._reconstruct
    # a file pickled under numpy 1.x names numpy.core.multiarray._reconstruct; numpy 2 moved it to _core
    allowed = [np.ndarray, np.dtype, rebuild, type(np.dtype(np.uint32)),
               (rebuild, "numpy.core.multiarray._reconstruct"), (rebuild, "numpy._core.multiarray._reconstruct")]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)
