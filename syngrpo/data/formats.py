"""Dataset formats: the files the field ships, read into a task's own records.

Researchers arrive with VLM-R1's JSON/JSONL files, the ``refer`` API's RefCOCO pickles, COCO
``instances_*.json``, D³'s annotations, 3D-FRONT scenes or a Hugging Face dataset.  A **dataset
format** (a plugin: ``register_dataset_formats``, docs/hooks/dataset_formats.md) reads one such
layout into records of a task's own JSONL format (docs/tasks/*.md), so every task reads them as it
reads its own files.  Three commands use them, all through :func:`read_format`:

* ``syngrpo data convert --from FORMAT IN --out DIR`` writes the records once (:func:`write_converted`);
* ``data.format: FORMAT`` reads the source in place when a run starts (``syngrpo.train.data``);
* ``syngrpo data prepare NAME --from DIR`` lays out every split of a downloaded copy (:meth:`DatasetFormat.prepare`).

The format knowledge lives with the tasks (``tasks_rec``, ``tasks_ovd``, ``tasks_isr``); this
module only holds the contract and what every reader shares: the error that lists **every** bad
record with its file, its record number and what to change (:class:`DatasetError`, collected with
:class:`Problems`), and the provenance each record keeps (``source_record``).
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from PIL import Image

from syngrpo.data.files import note_bad_record, portable_image_path, write_jsonl
from syngrpo.errors import ConfigError

log = logging.getLogger(__name__)

#: the record key that says where a converted record came from (``"<file> <locator>"``); tasks keep it in
#: ``sample.meta`` and write it back, so an error about a converted sample can name the original record
SOURCE_KEY = "source_record"
#: most problems an error message lists (the count of the rest follows)
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class RecordProblem:
    """One bad record: where it is (file and record number), what is wrong, and what to change."""

    where: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}" + (f"; {self.fix}" if self.fix else "")


class DatasetError(ConfigError):
    """A dataset has bad records; the message lists them (file, record number, fix), at most 20 of them."""

    def __init__(self, problems: Iterable[RecordProblem | str], *, what: str = "the dataset") -> None:
        self.problems = [p if isinstance(p, RecordProblem) else RecordProblem("", str(p)) for p in problems]
        shown = [str(p).lstrip(": ") for p in self.problems[:SHOWN_PROBLEMS]]
        more = len(self.problems) - len(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{what} has {len(self.problems)} bad record(s):\n  " + "\n  ".join(shown) + tail)


class Problems:
    """Collects the bad records of one read, so one run of ``syngrpo check`` shows all of them, not the first."""

    def __init__(self) -> None:
        self.items: list[RecordProblem] = []

    def add(self, where: str, problem: str, fix: str = "") -> None:
        self.items.append(RecordProblem(where, problem, fix))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, what: str) -> None:
        if self.items:
            raise DatasetError(self.items, what=what)


T = TypeVar("T")


def build_each(located: Sequence[tuple[str, dict[str, Any]]], build: Callable[[int, dict[str, Any]], T], *,
               what: str, image_base: str | Path | None = None) -> list[T]:
    """``build(index, record)`` for every located record; every failure becomes one problem of one error.

    A task's ``load`` uses it so that a file with bad records fails once, listing each of them with its
    file and record number (``located`` comes from :func:`syngrpo.data.files.located_records`).  A
    missing image is told where relative paths start (``image_base``) and how to move that.
    """
    out: list[T] = []
    problems = Problems()
    for i, (where, record) in enumerate(located):
        try:
            out.append(build(i, record))
        except FileNotFoundError as exc:
            problem = RecordProblem(where, str(exc).split(";")[0], image_fix(image_base))
        except (ValueError, TypeError, KeyError, OSError, ArithmeticError, Image.DecompressionBombError) as exc:
            why = str(exc) if type(exc) in (ValueError, TypeError) else f"{type(exc).__name__}: {exc}"
            problem = RecordProblem(where, why)
        else:
            continue
        # under skipping_bad_records (``syngrpo check``, ``data.bad_samples: drop``) the record is noted and left out
        why = problem.problem + (f"; {problem.fix}" if problem.fix else "")
        if not note_bad_record(where.rsplit(" ", 2)[0], i, why):
            problems.items.append(problem)
    problems.raise_if_any(what)
    return out


def image_fix(base: str | Path | None) -> str:
    """What to change when an image is not where a record says."""
    where = f" (now {base})" if base is not None else ""
    return (f"relative image paths start at data.image_root{where}, by default the data file's folder: set it to the "
            "folder the paths start from (`syngrpo data convert --image-root` for a conversion)")


@dataclass
class FormatResult:
    """What a reader made of a source: the task's records (image paths absolute) and notes on what it left out."""

    records: list[dict[str, Any]]
    #: one line each: what was skipped or changed and why (crowd boxes, filtered categories, rooms without furniture)
    notes: list[str] = field(default_factory=list)


class DatasetFormat(abc.ABC):
    """One layout of files the field ships, read into records of a task's own format.

    Subclasses set ``name`` and ``task`` and implement :meth:`read`; a reader that knows the
    splits of a downloaded copy also implements :meth:`splits`, for ``syngrpo data prepare``.
    Readers never stop at the first bad record: they collect every problem (:class:`Problems`)
    and raise one :class:`DatasetError` naming each file and record and what to change.
    """

    #: the registry name (``data.format``, ``--from``)
    name: ClassVar[str] = ""
    #: the task whose records it writes (``rec``, ``ovd``, ``isr``); empty for any task
    task: ClassVar[str] = ""
    #: where the data comes from and under which licence (``syngrpo data formats``, docs/data.md)
    homepage: ClassVar[str] = ""
    licence: ClassVar[str] = ""

    @abc.abstractmethod
    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        """The records of ``source`` (a file or a folder, as the format documents it).

        ``split`` selects a split where the layout holds several (``None``: the format's
        default); ``image_root`` is where the images are when not where the format looks;
        ``workdir`` is a folder the reader may write derived files into (images it draws),
        ``None`` when there is none.
        """

    def splits(self, source: Path) -> list[str]:
        """The splits a downloaded copy at ``source`` holds (``syngrpo data prepare``); default: one, ``all``."""
        return ["all"]

    def prepare(self, source: Path, *, image_root: Path | None = None, image_roots: Mapping[str, Path] | None = None,
                workdir: Path | None = None) -> dict[str, FormatResult]:
        """Every split of a downloaded copy, keyed ``"<dataset>/<split>"`` (the layout under ``data/``).

        ``image_roots`` gives a dataset its own image folder (``{"lisa": ...}``); others use ``image_root``.
        """
        root = (image_roots or {}).get(self.name, image_root)
        return {f"{self.name}/{split}": self.read(source, split=None if split == "all" else split,
                                                  image_root=root, workdir=workdir)
                for split in self.splits(source)}


def read_format(registry: Any, name: str, source: str | Path, *, options: Mapping[str, Any] | None = None,
                split: str | None = None, image_root: str | Path | None = None, task: str | None = None,
                workdir: str | Path | None = None) -> FormatResult:
    """Build the format ``name`` with ``options`` and read ``source``; checks it writes ``task``'s records."""
    fmt = make_format(registry, name, options)
    if task and fmt.task and fmt.task != task:
        raise ConfigError(f"data.format {name!r} writes {fmt.task!r} records, but data.task is {task!r}; "
                          f"use a {task} format (`syngrpo data formats` lists them) or set data.task: {fmt.task}")
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"{source}: no such file or folder (the source of data.format {name!r})")
    root = Path(image_root).expanduser().absolute() if image_root is not None else None
    return fmt.read(path, split=split, image_root=root, workdir=Path(workdir) if workdir is not None else None)


def make_format(registry: Any, name: str, options: Mapping[str, Any] | None = None) -> DatasetFormat:
    """The registered format ``name``, built with ``options`` (an unknown option is a clear error)."""
    reg = registry.get("dataset_formats", name)
    try:
        fmt = reg.factory(**dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"dataset format {name!r} does not take options {sorted(options or {})}: {exc}") from exc
    if not isinstance(fmt, DatasetFormat):
        raise ConfigError(f"dataset format {name!r} is a {type(fmt).__name__}, not a syngrpo DatasetFormat")
    return fmt


def write_converted(result: FormatResult, out_file: str | Path) -> Path:
    """Write converted records as JSONL; image paths relative to the file's folder when the images lie below it."""
    out = Path(out_file)
    records = []
    for record in result.records:
        rec = dict(record)
        image = rec.get("image")
        if isinstance(image, str) and os.path.isabs(image):
            rec["image"] = portable_image_path(image, out)
        records.append(rec)
    write_jsonl(records, out)
    return out


#: files whose change invalidates a cached conversion (annotations; images are checked by ``syngrpo check``)
ANNOTATION_SUFFIXES = (".json", ".jsonl", ".p", ".pkl", ".parquet", ".arrow", ".obj")


def stamp(payload: Mapping[str, Any], sources: Iterable[Path]) -> str:
    """A cache key for a conversion: its arguments plus each annotation file's size and modification time."""
    files = []
    for src in sources:
        found = sorted(p for p in src.rglob("*") if p.suffix in ANNOTATION_SUFFIXES) if src.is_dir() else [src]
        for path in found:
            if path.is_file():
                st = path.stat()
                files.append([str(path), st.st_size, st.st_mtime_ns])
    return json.dumps({**payload, "files": files}, sort_keys=True, default=str)


def materialize_format(registry: Any, name: str, source: str | Path, out_dir: str | Path, *,
                       options: Mapping[str, Any] | None = None, split: str | None = None,
                       image_root: str | Path | None = None, task: str | None = None) -> Path:
    """Read ``source`` with the format ``name`` into ``out_dir/records.jsonl`` once; a later call with the same
    arguments and unchanged annotation files reuses it (``data.format``: the run directory is the cache).

    Returns the JSONL's path; what the reader left out is in ``out_dir/notes.txt`` and the log.
    """
    out = Path(out_dir)
    target, stamp_file = out / "records.jsonl", out / "source.json"
    key = stamp({"format": name, "source": str(Path(source).absolute()), "options": dict(options or {}),
                 "split": split, "image_root": str(image_root) if image_root is not None else None},
                [Path(source).expanduser()])
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text(encoding="utf-8") == key:
        return target
    result = read_format(registry, name, source, options=options, split=split, image_root=image_root, task=task,
                         workdir=out)
    if not result.records:
        raise ConfigError(f"{source}: data.format {name!r} found no records for split {split!r}")
    write_converted(result, target)
    (out / "notes.txt").write_text("".join(f"{n}\n" for n in result.notes), encoding="utf-8")
    stamp_file.write_text(key, encoding="utf-8")
    for note in result.notes:
        log.info("%s (%s): %s", source, name, note)
    return target
