"""Dataset files the task plugins read and write: JSON lists and JSONL, image paths.

Task formats differ in their fields, not in their files: VLM-R1-style datasets
are a JSON list of records or one JSON object per line (JSONL), with image paths
relative to an image folder.  Tasks share these helpers so that every task
accepts both layouts and resolves paths the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

__all__ = ["BadRecord", "build_samples", "image_size", "located_records", "note_bad_record", "pop_image_size", "portable_image_path", "read_records",
           "resolve_image", "resolve_images", "skipping_bad_records", "tidy_number", "write_jsonl", "write_records"]

T = TypeVar("T")


@dataclass(frozen=True)
class BadRecord:
    """A dataset record a reader could not turn into a sample: its file, its place (0-based) and why."""

    path: str
    index: int
    why: str


_SKIPPED: ContextVar[list[BadRecord] | None] = ContextVar("syngrpo_skipped_records", default=None)


@contextlib.contextmanager
def skipping_bad_records() -> Iterator[list[BadRecord]]:
    """Inside, a reader that builds its samples with :func:`build_samples` skips each record it cannot build
    (a missing, undecodable or huge image, a NaN box, a missing field) and lists it in the yielded list,
    instead of refusing the whole file at the first one.

    ``syngrpo check`` reads this way to name every bad record, and ``data.bad_samples: drop`` to leave them out.
    """
    found: list[BadRecord] = []
    token = _SKIPPED.set(found)
    try:
        yield found
    finally:
        _SKIPPED.reset(token)


def note_bad_record(path: str | Path, index: int, why: str) -> bool:
    """Under :func:`skipping_bad_records`, note one record a reader could not build and return ``True`` (the
    reader goes on); outside it return ``False`` (the reader raises as it would have)."""
    skipped = _SKIPPED.get()
    if skipped is None:
        return False
    skipped.append(BadRecord(str(path), index, why))
    return True


def build_samples(path: str | Path, records: Iterable[Mapping[str, Any]], build: Callable[[int, Any], T]) -> list[T]:
    """``[build(i, record) for i, record in enumerate(records)]``; under :func:`skipping_bad_records` a record
    whose ``build`` raises is skipped and noted (a reader's own bug, a ``TypeError``, is not: it still raises)."""
    skipped = _SKIPPED.get()
    out: list[T] = []
    for i, record in enumerate(records):
        if skipped is None:
            out.append(build(i, record))
            continue
        try:
            out.append(build(i, record))
        except (ValueError, OSError, KeyError, ArithmeticError, Image.DecompressionBombError) as exc:
            why = str(exc) if type(exc) in (ValueError, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
            skipped.append(BadRecord(str(path), i, why))
    return out


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-list or JSONL file (blank lines skipped).

    A file whose text starts with ``[`` is one JSON list; otherwise each line is
    one JSON object; a ``.json`` file holding one (pretty-printed) object is a
    one-record dataset.  Errors name the file and line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not a valid JSON list of records ({exc})") from exc
        bad = [i for i, r in enumerate(data) if not isinstance(r, dict)]
        if bad:
            raise ValueError(f"{path}: item {bad[0]} of the JSON list is not an object (a record)")
        return data
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if path.suffix == ".json" and not records:
                try:
                    whole = json.loads(text)
                except ValueError:
                    whole = None
                if isinstance(whole, dict):
                    return [whole]
            raise ValueError(f"{path}:{lineno}: not a JSON object ({exc})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: a JSONL line must be one JSON object (a record)")
        records.append(record)
    return records


def located_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """:func:`read_records` with where each record sits: ``"<file> line N"`` (JSONL) or ``"<file> record N"``.

    Numbers count from 1, as an editor shows lines, so an error built on them points at the record to fix.
    """
    path = Path(path)
    records = read_records(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("[") or len(records) == 1 and path.suffix == ".json":
        return [(f"{path} record {i}", r) for i, r in enumerate(records, start=1)]
    lines = [k for k, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return [(f"{path} line {k}", r) for k, r in zip(lines, records, strict=True)]


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """Write one JSON object per line, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_records(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """Write records the way :func:`read_records` reads them: a JSON list for ``.json``, else JSONL."""
    path = Path(path)
    if path.suffix != ".json":
        write_jsonl(records, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(list(records), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def resolve_image(value: Any, base: str | Path) -> str:
    """An absolute image path from a record's image field (a path, or a one-item list of one).

    A list of several paths is refused (a task that reads one image per record would silently drop the
    rest); a task that takes several reads them with :func:`resolve_images`.
    """
    if isinstance(value, (list, tuple)):
        if len(value) > 1:
            raise ValueError(f"the image field lists {len(value)} images, but this task reads one image per "
                             "record; give one path (REC reads several: docs/tasks/rec.md, 'Several images')")
        value = value[0] if value else value
    if not isinstance(value, str) or not value:
        raise ValueError(f"an image field must be a path string, got {value!r}")
    p = Path(value).expanduser()
    return os.path.abspath(p if p.is_absolute() else Path(base) / p)


def resolve_images(value: Any, base: str | Path) -> list[str]:
    """Absolute image paths from a record's image field: a path, or a non-empty list of paths, in prompt order."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError("the image field is an empty list; give a path or a list of paths")
    return [resolve_image(v, base) for v in values]


def portable_image_path(image: str, data_file: str | Path) -> str:
    """How a saved record names its image: relative to the data file's folder when inside it."""
    folder = Path(os.path.abspath(Path(data_file).parent))
    img = Path(os.path.abspath(image))
    try:
        return img.relative_to(folder).as_posix()
    except ValueError:
        return str(img)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the image header (the pixels are not decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"image {path} does not exist; give width/height in the record or fix image_root") from exc


def pop_image_size(record: dict[str, Any], image: str | Path) -> tuple[int, int]:
    """The record's ``width``/``height`` (removed from it), or the image header's when absent."""
    w, h = _size(record.pop("width", None)), _size(record.pop("height", None))
    if w is not None and h is not None and w > 0 and h > 0:
        return int(round(w)), int(round(h))
    return image_size(image)


def _size(value: Any) -> float | None:
    """A record's ``width`` / ``height``: a finite number, or a string holding one; anything else is ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        f = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def tidy_number(v: float) -> int | float:
    """``12.0 -> 12`` so that saved files stay readable; other values unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v
