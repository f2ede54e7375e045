"""Hugging Face ``datasets`` as training and evaluation data (what TRL, verl and EasyR1 users bring).

``data.train`` / ``data.eval`` may name, besides a task's own JSON/JSONL file:

* a local **parquet** or **arrow** file, or a directory of them (or one written by
  ``Dataset.save_to_disk``), read with ``datasets``;
* ``hf://REPO[@CONFIG][:SPLIT]``: a dataset on the Hugging Face hub (split ``train``
  by default; needs network access or the datasets cache).

Rows become records of the task's own format, so the task's loader reads them as
it reads its JSONL files and every task works unchanged: ``data.columns`` renames
dataset columns to the fields the task reads (``{image: img, problem: question}``,
field on the left, column on the right); an image column may hold paths,
``datasets.Image`` values (decoded PIL images) or bytes (``{"bytes": ...}``),
written once as PNG files beside the converted records.

An image column that holds **paths only** (an ``Image`` feature with no bytes, or plain strings) is
never decoded by ``datasets`` (which would open the path relative to the working directory and fail
mid-run with a raw ``FileNotFoundError``): each path starts at ``data.image_root``, by default the
dataset's own folder, and a missing image is an error naming the row, found by ``syngrpo check``
before anything loads (:func:`image_problems`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import read_records
from syngrpo.data.formats import SOURCE_KEY, DatasetError, DatasetFormat, FormatResult, RecordProblem
from syngrpo.errors import ConfigError, require

log = logging.getLogger(__name__)

HF_PREFIX = "hf://"
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


def is_dataset_source(path: str | None) -> bool:
    """True when ``path`` is for :mod:`datasets` (hub id, parquet/arrow file, dataset directory)."""
    if not path:
        return False
    if str(path).startswith(HF_PREFIX):
        return True
    p = Path(path)
    return p.suffix in _FILE_BUILDERS or p.is_dir()


def parse_hub_source(source: str) -> tuple[str, str | None, str]:
    """``hf://REPO[@CONFIG][:SPLIT]`` -> (repo, config, split)."""
    rest = source[len(HF_PREFIX):]
    rest, _, split = rest.partition(":")
    repo, _, config = rest.partition("@")
    if not repo or repo.count("/") > 1:
        raise ConfigError(f"{source!r}: expected hf://OWNER/NAME[@CONFIG][:SPLIT]")
    return repo, config or None, split or "train"


def load_rows(source: str, *, split: str = "train") -> Any:
    """The ``datasets.Dataset`` a source names (see the module docstring)."""
    datasets = require("datasets", extra="datasets", what=f"reading {source!r} (data.train/data.eval)")
    if source.startswith(HF_PREFIX):
        repo, config, hub_split = parse_hub_source(source)
        return datasets.load_dataset(repo, config, split=hub_split)
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"data file or directory {source!r} does not exist")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            data = datasets.load_from_disk(str(path))
            return data[split] if isinstance(data, datasets.DatasetDict) else data
        builder = next((b for suffix, b in _FILE_BUILDERS.items() if any(path.glob(f"*{suffix}"))), None)
        if builder is None:
            raise ConfigError(f"{source!r} is a directory with no .parquet or .arrow files and no saved dataset")
        files = sorted(str(p) for p in path.glob(f"*{'.parquet' if builder == 'parquet' else '.arrow'}"))
        return datasets.load_dataset(builder, data_files=files, split="train")
    return datasets.load_dataset(_FILE_BUILDERS[path.suffix], data_files=str(path), split="train")


def image_base(source: str, image_root: str | Path | None) -> Path:
    """Where a path-only image value starts: ``data.image_root``, else the dataset file's (or directory's) folder."""
    if image_root is not None:
        return Path(image_root).expanduser()
    if source.startswith(HF_PREFIX):
        return Path.cwd()
    path = Path(source).expanduser()
    return path if path.is_dir() else path.parent


def undecoded(rows: Any) -> Any:
    """``rows`` with every ``datasets.Image`` column left undecoded (``{"bytes", "path"}``): nothing opens a path."""
    datasets = require("datasets", extra="datasets", what="reading a Hugging Face dataset")
    for name, feature in rows.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            rows = rows.cast_column(name, datasets.Image(decode=False))
    return rows


def _image_column(rows: Any, columns: Mapping[str, str] | None, image_field: str, source: str) -> str:
    column = dict(columns or {}).get(image_field, image_field)
    if column not in rows.column_names:
        raise ConfigError(f"{source!r}: rows have no {image_field!r} field (columns {rows.column_names}); "
                          f"map one with data.columns: {{{image_field}: COLUMN}}")
    return column


def _path_of(value: Any) -> str | None:
    """The path a path-only image value holds (a string, or ``{"path": ..., "bytes": None}``); else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and not value.get("bytes") and isinstance(value.get("path"), str):
        return value["path"]
    return None


def image_problems(source: str, *, columns: Mapping[str, str] | None = None, image_field: str = "image",
                   image_root: str | Path | None = None, split: str = "train") -> tuple[int, list[RecordProblem]]:
    """``(rows, problems)``: every row whose image is a path to no file, or holds nothing usable (``syngrpo check``)."""
    rows = undecoded(load_rows(source, split=split))
    column = _image_column(rows, columns, image_field, source)
    base = image_base(source, image_root)
    problems = []
    for i, row in enumerate(rows.select_columns([column])):  # row by row: embedded bytes never all in memory
        where = f"{source} row {i} (ds[{i}])"
        values = row[column] if isinstance(row[column], (list, tuple)) else [row[column]]  # a list: several images
        if not values:
            problems.append(RecordProblem(where, f"the image column {column!r} holds an empty list",
                                          "give at least one image"))
        for value in values:
            path = _path_of(value)
            if path is not None:
                full = Path(path).expanduser() if Path(path).is_absolute() else base / path
                if not full.is_file():
                    problems.append(RecordProblem(where, f"image {path!r} does not exist (looked in {base})",
                                                  "set data.image_root to the folder the image paths start from"))
            elif not (isinstance(value, Mapping) and value.get("bytes")) and not isinstance(value, (bytes, bytearray)) \
                    and not (hasattr(value, "save") and hasattr(value, "mode")):  # a list of images stays decoded
                problems.append(RecordProblem(where, f"the image column {column!r} holds {type(value).__name__}",
                                              "give a path, bytes or a datasets.Image value"))
    return len(rows), problems


def materialize(source: str, out_dir: str | Path, *, columns: Mapping[str, str] | None = None,
                image_field: str = "image", split: str = "train", image_root: str | Path | None = None) -> Path:
    """Write the rows of ``source`` as a JSONL of task records (images as PNG files); returns its path.

    ``columns`` maps task fields to dataset columns; columns it does not name keep
    their names.  Path-only images are resolved against ``image_root`` (default: the
    dataset's folder) and written as absolute paths; a missing one is a
    :class:`~syngrpo.data.formats.DatasetError` naming every such row.  A conversion already
    on disk for the same source, mapping and image root is reused (the run directory is the cache).
    """
    out = Path(out_dir)
    mapping = dict(columns or {})
    stamp = json.dumps({"source": source, "columns": mapping, "split": split,
                        "image_root": str(image_root) if image_root is not None else None}, sort_keys=True)
    target = out / "records.jsonl"
    if target.is_file() and (out / "source.json").is_file() and (out / "source.json").read_text() == stamp:
        return target
    rows = undecoded(load_rows(source, split=split))
    missing = sorted(set(mapping.values()) - set(rows.column_names))
    if missing:
        raise ConfigError(f"data.columns names column(s) {missing} that {source!r} does not have; "
                          f"its columns: {rows.column_names}")
    _image_column(rows, mapping, image_field, source)
    _, problems = image_problems(source, columns=mapping, image_field=image_field, image_root=image_root, split=split)
    if problems:
        raise DatasetError(problems, what=f"the dataset {source}")
    base = image_base(source, image_root)
    rename = {column: field for field, column in mapping.items()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    tmp = out / "records.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            record = {rename.get(k, k): v for k, v in row.items()}
            value = record[image_field]
            if isinstance(value, (list, tuple)):  # several images (a Sequence(Image) column): one file each, in order
                record[image_field] = [_image_path(v, out / "images" / f"{i:07d}-{k}.png", source, i, base)
                                       for k, v in enumerate(value)]
            else:
                record[image_field] = _image_path(value, out / "images" / f"{i:07d}.png", source, i, base)
            f.write(json.dumps(_plain(record)) + "\n")
    tmp.replace(target)
    (out / "source.json").write_text(stamp)
    log.info("converted %d rows of %s into %s", len(rows), source, target)
    return target


def _image_path(value: Any, dst: Path, source: str, row: int, base: Path) -> str:
    """A file path for one row's image: paths made absolute (from ``base``), PIL images and bytes written as PNG."""
    path = _path_of(value)
    if path is not None:
        return str((base / Path(path).expanduser()).absolute())
    if isinstance(value, Mapping) and value.get("bytes"):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray)):
        from PIL import Image

        with Image.open(io.BytesIO(value)) as im:
            im.convert("RGB").save(dst)
        return str(dst.resolve())
    if hasattr(value, "save") and hasattr(value, "mode"):  # a decoded PIL image
        value.convert("RGB").save(dst)
        return str(dst.resolve())
    raise ConfigError(f"{source!r} row {row}: the image is neither a path, bytes nor an image ({type(value).__name__})")


def _plain(value: Any) -> Any:
    """JSON-ready values (numpy arrays and scalars from arrow rows become lists and numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class HfDataset(DatasetFormat):
    """Hugging Face datasets (parquet / arrow files, a ``save_to_disk`` folder) as a format: ``syngrpo data convert
    --from hf``.  Options: ``columns`` (task field -> column, as ``data.columns``) and ``image_field``.  A run reads
    such a source without it (``data.train`` names the file; ``data.columns`` maps it)."""

    name: ClassVar[str] = "hf"
    task: ClassVar[str] = ""
    homepage: ClassVar[str] = "https://huggingface.co/docs/datasets (any dataset saved as parquet / arrow)"
    licence: ClassVar[str] = "the dataset's own (its dataset card)"

    def __init__(self, *, columns: Mapping[str, str] | None = None, image_field: str = "image") -> None:
        self.columns, self.image_field = dict(columns or {}), image_field

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        if workdir is None:
            raise ConfigError("the hf format writes embedded images as files and needs a folder for them: pass --out")
        target = materialize(str(source), workdir / "hf" / (split or "train"), columns=self.columns,
                             image_field=self.image_field, split=split or "train", image_root=image_root)
        records = [{**r, SOURCE_KEY: f"{source} row {i} (ds[{i}])"} for i, r in enumerate(read_records(target))]
        return FormatResult(records)
