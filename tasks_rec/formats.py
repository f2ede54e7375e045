"""The REC datasets the field ships, read into REC records (docs/data.md, "Formats").

* ``vlmr1_rec``: VLM-R1's files (``rec_jsons_processed/*.json`` lists and the training JSONL):
  ``image`` a path or a list, ``problem`` + ``normal_caption`` + ``solution``, or ``conversations``;
* ``refer`` (and its presets ``refcoco``, ``refcocop``, ``refcocog``): the ``refer`` API's
  ``refs(<split_by>).p`` + ``instances.json``, one record per expression, split by the ref's split;
* ``lisa``: LISA's ReasonSeg folders (``image.jpg`` + ``image.json`` with ``text`` and labelme
  ``shapes``), the box of the ``target`` polygons: LISA-Grounding.

Every reader collects all bad records and raises one error naming each file, record and fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import located_records
from syngrpo.data.formats import SOURCE_KEY, DatasetFormat, FormatResult, Problems
from syngrpo.data.pickles import load_plain_pickle
from syngrpo.errors import ConfigError
from syngrpo.perception.answers import as_box, as_number
from tasks_rec.task import BOX_KEYS, EXPRESSION_KEYS, ID_KEYS, IMAGE_KEYS, QUESTION_KEYS, SOLUTION_KEYS, parse_box

#: VLM-R1's question in its REC files (``problem``), around the expression
VLMR1_QUESTION = "Please provide the bounding box coordinate of the region this sentence describes: {expression}."
#: the ``refer`` API's default split for each dataset (its README recommends UMD's for RefCOCOg)
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}
#: folder names VLM-R1 and the paper use for the datasets (``refcoco+`` is ``refcocop`` there)
LAYOUT_NAMES = {"refcoco": "refcoco", "refcoco+": "refcocop", "refcocog": "refcocog", "refclef": "refclef"}


def _image_path(value: Any) -> str:
    """The one image of a record: a path, or a list (nested lists too) holding exactly one."""
    while isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"'image' lists {len(value)} images; a REC record has one image (a path, or a list "
                             "of one path)" if value else "'image' is an empty list; give the image's path")
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'image' is {value!r}; give the image's path (relative to the image root)")
    return value.strip()


def _box(raw: Any) -> list[float] | None:
    """A label box from any of the forms VLM-R1 files use: a list, a string, ``<answer>`` text, ``{"bbox_2d": ...}``.

    A list keeps its corners as written (an inverted label box is a mistake, not a box to reorder).
    """
    if isinstance(raw, str):
        box = parse_box(raw)
    elif isinstance(raw, dict):
        return next((_box(raw[k]) for k in BOX_KEYS if k in raw), None)
    elif isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], dict):
        return _box(raw[0])
    elif isinstance(raw, (list, tuple)) and as_box(raw) is not None:
        return [float(as_number(v)) for v in raw]  # type: ignore[arg-type]
    else:
        box = None
    return None if box is None else [float(v) for v in box]


def _read_json(path: Path) -> Any:
    """A JSON file in UTF-8, or in cp1252 as some ReasonSeg annotations are (LISA's own reader allows both)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return json.loads(text)


class VlmR1Rec(DatasetFormat):
    """VLM-R1's REC files: ``rec_jsons_processed/*.json`` and the JSONL of its training scripts.

    Reads a JSON list or JSONL file, or a folder of them (``split`` then names the file:
    ``refcoco_val``).  Image paths are relative to ``image_root`` (VLM-R1's ``--image_folders``),
    by default the file's folder.
    """

    name: ClassVar[str] = "vlmr1_rec"
    task: ClassVar[str] = "rec"
    homepage: ClassVar[str] = "https://huggingface.co/datasets/omlab/VLM-R1 (rec_jsons_processed.zip)"
    licence: ClassVar[str] = "VLM-R1: Apache-2.0; RefCOCO/+/g via refer (Apache-2.0), LISA (Apache-2.0); COCO images under their Flickr terms"

    def splits(self, source: Path) -> list[str]:
        if source.is_file():
            return [source.stem]
        stems = {p.stem for p in source.iterdir() if p.suffix in (".json", ".jsonl")}
        return sorted(stems)

    def prepare(self, source: Path, *, image_root: Path | None = None, image_roots: Mapping[str, Path] | None = None,
                workdir: Path | None = None) -> dict[str, FormatResult]:
        """Each ``<dataset>_<split>.json[l]`` file as ``<dataset>/<split>``, in the file's own record order."""
        out = {}
        for stem in self.splits(source):
            dataset, _, split = stem.rpartition("_")
            dataset = dataset or stem
            out[f"{dataset}/{split or 'all'}"] = self.read(source, split=stem,
                                                           image_root=(image_roots or {}).get(dataset, image_root))
        return out

    def _file(self, source: Path, split: str | None) -> Path:
        if source.is_file():
            return source
        candidates = [source / f"{split}{suffix}" for suffix in (".json", ".jsonl")] if split else []
        found = [p for p in candidates if p.is_file()]
        if not found:
            have = ", ".join(self.splits(source)) or "none"
            raise ConfigError(f"{source}: no VLM-R1 file for split {split!r}; files here: {have} "
                              "(name one with --split or data.format_options: {split: NAME}, or give the file itself)")
        return found[0]

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        path = self._file(source, split)
        root = image_root if image_root is not None else path.parent
        records, problems = [], Problems()
        for i, (where, rec) in enumerate(located_records(path)):
            try:
                records.append(self._record(rec, root, f"{path.stem}-{i}", where))
            except ValueError as exc:
                problems.add(where, str(exc))
        problems.raise_if_any(f"VLM-R1 REC file {path}")
        return FormatResult(records)

    @staticmethod
    def _record(rec: dict[str, Any], root: Path, default_id: str, where: str) -> dict[str, Any]:
        rec = dict(rec)
        turns = [t for t in rec.pop("conversations", None) or [] if isinstance(t, dict)]
        key = next((k for k in IMAGE_KEYS if k in rec), None)
        if key is None:
            raise ValueError("no image; add 'image' (a path relative to the image folder, or a list of one)")
        image = str((root / _image_path(rec.pop(key))).absolute())
        sol_key = next((k for k in SOLUTION_KEYS if k in rec), None)
        raw = rec.pop(sol_key) if sol_key else turns[1].get("value") if len(turns) > 1 else None
        if raw is None or raw in ("", [], {}):
            what = f"'{sol_key}' is empty" if sol_key else "there is no 'solution' (nor a second conversation turn)"
            raise ValueError(f"{what}; a REC record needs its box: 'solution': [x1, y1, x2, y2] in pixels")
        box = _box(raw)
        if box is None:
            raise ValueError(f"the box {str(raw)[:100]!r} is not four numbers; write 'solution': [x1, y1, x2, y2]")
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"the box {box} is empty or inverted; a box needs x1 < x2 and y1 < y2")
        id_key = next((k for k in ID_KEYS if k in rec), None)
        out: dict[str, Any] = {"id": str(rec.pop(id_key)) if id_key else default_id, "image": image}
        expression = next((rec[k] for k in EXPRESSION_KEYS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        question = next((rec[k] for k in QUESTION_KEYS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if question is None and turns and isinstance(turns[0].get("value"), str):
            question = turns[0]["value"].replace("<image>", "").strip()
        if expression is None and not question:
            raise ValueError("no expression; add 'normal_caption' (or 'problem', the whole question)")
        for k in EXPRESSION_KEYS + QUESTION_KEYS:
            rec.pop(k, None)
        if expression is not None:
            out["normal_caption"] = expression.strip()
        if question:
            out["problem"] = question
        out["solution"] = box
        out.update(rec)  # width/height and every other field (bbox_list, normalized_solution ...) travel along
        out[SOURCE_KEY] = where
        return out


class Refer(DatasetFormat):
    """The ``refer`` API's annotations: ``refs(<split_by>).p`` + ``instances.json`` of RefCOCO, RefCOCO+, RefCOCOg.

    ``source`` is the dataset's folder (``refer/data/refcoco``) or the ``refer/data`` folder (then
    ``dataset`` picks the sub-folder).  One record per expression: its box is the referred
    annotation's COCO ``[x, y, w, h]`` written as ``[x, y, x + w, y + h]``, as VLM-R1's files hold it.
    Splits follow the API's ``getRefIds``: ``train``, ``val``, ``test``, ``testA`` / ``testB``.
    Images: ``image_root``, else ``images/mscoco/images/train2014`` beside the dataset folders (the
    API's layout).
    """

    name: ClassVar[str] = "refer"
    task: ClassVar[str] = "rec"
    homepage: ClassVar[str] = "https://github.com/lichengunc/refer (refcoco.zip, refcoco+.zip, refcocog.zip); COCO train2014 images"
    licence: ClassVar[str] = "refer repository: Apache-2.0; COCO annotations CC BY 4.0, images under their Flickr terms"

    def __init__(self, *, dataset: str = "refcoco", split_by: str | None = None) -> None:
        if dataset not in DEFAULT_SPLIT_BY:
            raise ValueError(f"dataset must be one of {', '.join(DEFAULT_SPLIT_BY)}, got {dataset!r}")
        self.dataset = dataset
        self.split_by = split_by or DEFAULT_SPLIT_BY[dataset]

    def _folder(self, source: Path) -> Path:
        for folder in (source, source / self.dataset):
            if (folder / f"refs({self.split_by}).p").is_file():
                return folder
        raise ConfigError(f"{source}: no refs({self.split_by}).p here or in {source / self.dataset}; give the folder "
                          f"the refer API unpacks {self.dataset}.zip into (it holds refs({self.split_by}).p and "
                          "instances.json), or another split_by")

    def _images(self, folder: Path, image_root: Path | None) -> Path:
        if image_root is not None:
            return image_root
        for guess in (folder.parent / "images" / "mscoco" / "images" / "train2014", folder.parent / "train2014"):
            if guess.is_dir():
                return guess
        raise ConfigError(f"{folder}: no COCO train2014 image folder at {folder.parent / 'images/mscoco/images/train2014'}"
                          " (the refer API's layout); pass the folder holding COCO_train2014_*.jpg as --image-root "
                          "(data.image_root)")

    def splits(self, source: Path) -> list[str]:
        refs = load_plain_pickle(self._folder(source) / f"refs({self.split_by}).p")
        found = sorted({str(r.get("split")) for r in refs if isinstance(r, dict)})
        tests = sorted({c for s in found if s.startswith("test") for c in s[4:]})
        return [s for s in ("train", "val") if s in found] + (
            [f"test{c}" for c in tests] if tests else ["test"] if "test" in found else [])

    def prepare(self, source: Path, *, image_root: Path | None = None, image_roots: Mapping[str, Path] | None = None,
                workdir: Path | None = None) -> dict[str, FormatResult]:
        name = LAYOUT_NAMES[self.dataset]
        root = (image_roots or {}).get(name, image_root)
        return {f"{name}/{split}": self.read(source, split=split, image_root=root) for split in self.splits(source)}

    @staticmethod
    def _in_split(ref_split: str, split: str) -> bool:
        """The refer API's rule: ``testA`` also takes ``testAB``; ``test`` takes every test split."""
        if split in ("testA", "testB", "testC"):
            return ref_split.startswith("test") and split[-1] in ref_split[4:]
        if split == "test":
            return "test" in ref_split
        return ref_split == split

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        split = split or "train"
        folder = self._folder(source)
        refs_file, instances_file = folder / f"refs({self.split_by}).p", folder / "instances.json"
        if not instances_file.is_file():
            raise ConfigError(f"{folder}: instances.json is missing; it comes in the same {self.dataset}.zip as "
                              f"refs({self.split_by}).p")
        refs = load_plain_pickle(refs_file)
        if not isinstance(refs, list):
            raise ConfigError(f"{refs_file}: holds a {type(refs).__name__}, not the list of refs the refer API writes")
        instances = json.loads(instances_file.read_text(encoding="utf-8"))
        anns = {a.get("id"): a for a in instances.get("annotations", []) if isinstance(a, dict)}
        images = {im.get("id"): im for im in instances.get("images", []) if isinstance(im, dict)}
        cats = {c.get("id"): c.get("name") for c in instances.get("categories", []) if isinstance(c, dict)}
        image_dir = self._images(folder, image_root)
        records, problems = [], Problems()
        for n, ref in enumerate(refs, start=1):
            where = f"{refs_file} ref {n}" + (f" (ref_id {ref.get('ref_id')})" if isinstance(ref, dict) else "")
            if not isinstance(ref, dict):
                problems.add(where, f"is a {type(ref).__name__}, not a ref", "re-download the dataset")
                continue
            if not self._in_split(str(ref.get("split", "")), split):
                continue
            ann = anns.get(ref.get("ann_id"))
            image = images.get(ref.get("image_id"))
            if ann is None:
                problems.add(where, f"its ann_id {ref.get('ann_id')} is not in {instances_file}",
                             f"use the instances.json of the same {self.dataset}.zip as refs({self.split_by}).p")
                continue
            if image is None:
                problems.add(where, f"its image_id {ref.get('image_id')} is not in {instances_file}",
                             f"use the instances.json of the same {self.dataset}.zip")
                continue
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError):
                problems.add(where, f"annotation {ann.get('id')} has no [x, y, w, h] bbox ({ann.get('bbox')!r})",
                             "fix instances.json or re-download it")
                continue
            if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h)):
                problems.add(where, f"annotation {ann.get('id')} has the empty box [x, y, w, h] = {ann['bbox']}",
                             "a referred object needs a positive width and height; fix or drop this ref")
                continue
            sentences = [s for s in ref.get("sentences") or [] if isinstance(s, dict)]
            if not sentences:
                problems.add(where, "has no sentences", "a REC record needs an expression; drop this ref")
                continue
            for k, sent in enumerate(sentences, start=1):
                text = str(sent.get("sent") or sent.get("raw") or "").strip()
                if not text:
                    problems.add(f"{where} sentence {k}", "is empty", "drop it from the ref's sentences")
                    continue
                records.append({
                    "id": f"{LAYOUT_NAMES[self.dataset]}-{ref.get('ref_id')}-{sent.get('sent_id', k)}",
                    "image": str((image_dir / str(image.get("file_name"))).absolute()),
                    "normal_caption": text,
                    "problem": VLMR1_QUESTION.format(expression=text),
                    "solution": [x, y, x + w, y + h],
                    "width": image.get("width"), "height": image.get("height"),
                    "ref_id": ref.get("ref_id"), "ann_id": ref.get("ann_id"), "category": cats.get(ann.get("category_id")),
                    SOURCE_KEY: f"{where} sentence {k}",
                })
        problems.raise_if_any(f"{self.dataset} ({refs_file})")
        if not records:
            raise ConfigError(f"{refs_file}: no ref is in split {split!r}; its splits: {', '.join(self.splits(source))}")
        return FormatResult(records)


class ReasonSegLisa(DatasetFormat):
    """LISA's ReasonSeg folders as REC: LISA-Grounding (the box of every ``target`` polygon).

    ``source`` is the ReasonSeg folder holding ``train/``, ``val/``, ``test/`` (or one of them);
    each ``name.jpg`` has a ``name.json`` with ``text`` (a list of instructions), ``is_sentence``
    and labelme ``shapes``.  ``ignore`` and ``flag`` shapes are left out (LISA's evaluation ignores
    them); the box is the tightest ``[x1, y1, x2, y2]`` around the ``target`` polygons' points.
    One record per instruction.  VLM-R1's own ``lisa_test.json`` (read it with ``vlmr1_rec``) is
    the file the paper's number comes from; this reader is for a copy of ReasonSeg itself.
    """

    name: ClassVar[str] = "lisa"
    task: ClassVar[str] = "rec"
    homepage: ClassVar[str] = "https://github.com/dvlab-research/LISA (ReasonSeg on Google Drive)"
    licence: ClassVar[str] = "LISA repository: Apache-2.0; ReasonSeg images under their sources' terms"

    def splits(self, source: Path) -> list[str]:
        if any(source.glob("*.json")):
            return [source.name]
        return [s for s in ("train", "val", "test") if (source / s).is_dir()]

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        folder = source if split is None or source.name == split else source / split
        if not folder.is_dir():
            raise ConfigError(f"{source}: no {split!r} folder; ReasonSeg splits here: {', '.join(self.splits(source)) or 'none'}")
        records, problems, notes = [], Problems(), []
        files = sorted(folder.glob("*.json"))
        for path in files:
            where = f"{path}"
            try:
                anno = _read_json(path)
            except ValueError as exc:
                problems.add(where, f"is not JSON ({exc})", "re-download this annotation")
                continue
            texts = anno.get("text")
            texts = [texts] if isinstance(texts, str) else [t for t in texts or [] if isinstance(t, str) and t.strip()]
            points = [p for shape in anno.get("shapes") or [] if isinstance(shape, dict)
                      and str(shape.get("label", "")).lower() not in ("ignore", "flag")
                      and "ignore" not in str(shape.get("label", "")).lower()
                      for p in shape.get("points") or []]
            if not texts:
                problems.add(where, "has no 'text' instruction", "a grounding record needs one; drop this image")
                continue
            try:
                xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
            except (TypeError, ValueError, IndexError):
                problems.add(where, "has a polygon point that is not [x, y]", "fix the shape's points")
                continue
            if not xs or max(xs) <= min(xs) or max(ys) <= min(ys):
                problems.add(where, "has no 'target' polygon with an area", "a grounding record needs its target")
                continue
            image = (image_root or folder) / f"{path.stem}.jpg"
            # a long instruction is the question itself; a short one is an expression the REC question wraps
            text_key = "problem" if anno.get("is_sentence") else "normal_caption"
            for k, text in enumerate(texts, start=1):
                records.append({"id": f"lisa-{folder.name}-{path.stem}-{k}", "image": str(image.absolute()),
                                text_key: text.strip(), "solution": [min(xs), min(ys), max(xs), max(ys)],
                                "is_sentence": bool(anno.get("is_sentence")), SOURCE_KEY: f"{where} text {k}"})
        problems.raise_if_any(f"ReasonSeg {folder}")
        if not files:
            raise ConfigError(f"{folder}: no ReasonSeg annotations (*.json beside the *.jpg images)")
        return FormatResult(records, notes)
