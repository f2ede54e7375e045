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
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def materialize(source: str, out_dir: str | Path, *, columns: Mapping[str, str] | None = None,
                image_field: str = "image", split: str = "train") -> Path:
    """Write the rows of ``source`` as a JSONL of task records (images as PNG files); returns its path.

    ``columns`` maps task fields to dataset columns; columns it does not name keep
    their names.  A conversion already on disk for the same source and mapping is
    reused (the run directory is the cache).
    """
    out = Path(out_dir)
    mapping = dict(columns or {})
    stamp = json.dumps({"source": source, "columns": mapping, "split": split}, sort_keys=True)
    target = out / "records.jsonl"
    if target.is_file() and (out / "source.json").is_file() and (out / "source.json").read_text() == stamp:
        return target
    rows = load_rows(source, split=split)
    missing = sorted(set(mapping.values()) - set(rows.column_names))
    if missing:
        raise ConfigError(f"data.columns names column(s) {missing} that {source!r} does not have; "
                          f"its columns: {rows.column_names}")
    rename = {column: field for field, column in mapping.items()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    tmp = out / "records.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            record = {rename.get(k, k): v for k, v in row.items()}
            if image_field not in record:
                raise ConfigError(f"{source!r}: rows have no {image_field!r} field (columns {rows.column_names}); "
                                  f"map one with data.columns: {{{image_field}: COLUMN}}")
            record[image_field] = _image_path(record[image_field], out / "images" / f"{i:07d}.png", source, i)
            f.write(json.dumps(_plain(record)) + "\n")
    tmp.replace(target)
    (out / "source.json").write_text(stamp)
    log.info("converted %d rows of %s into %s", len(rows), source, target)
    return target


def _image_path(value: Any, dst: Path, source: str, row: int) -> str:
    """A file path for one row's image: paths kept, PIL images and bytes written as PNG."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            return str(value["path"])
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
