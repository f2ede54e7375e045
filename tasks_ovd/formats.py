"""The detection datasets the field ships, read into OVD records (docs/data.md, "Formats").

* ``vlmr1_ovd``: VLM-R1's OVD JSONL (``conversations`` whose question lists the categories and
  whose answer is a ```` ```json ```` list of ``{"bbox_2d", "label"}``, or ``None``);
* ``coco``: COCO ``instances_*.json`` (categories by id, gaps and all; crowd boxes left out), and its
  preset ``coco_filter``: VLM-R1's COCO_filter rule on val2017 (per image, a category with more than
  10 boxes is left out, so is one with a crowd box);
* ``d3``: D³'s toolkit pickles (``d3_pkl/``): per image, the descriptions of its group (the
  intra-group setting D³ evaluates by default), absence descriptions included, and the boxes of each.

Every reader collects all bad records and raises one error naming each file, record and fix.
"""

from __future__ import annotations

import ast
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from syngrpo.data.files import located_records
from syngrpo.data.formats import SOURCE_KEY, DatasetFormat, FormatResult, Problems
from syngrpo.data.pickles import load_plain_pickle
from syngrpo.errors import ConfigError
from syngrpo.perception.answers import parse_detections, to_detection

#: VLM-R1's OVD question says "detect the following objects: [...]" (or "targets: a, b, c")
_LIST_MARKERS = ("following objects:", "following targets:", "following categories:")


def _xywh_box(bbox: Any) -> list[float] | None:
    """COCO's ``[x, y, w, h]`` as ``[x1, y1, x2, y2]``; ``None`` when it is not four finite numbers with an area."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return [x, y, x + w, y + h]


def question_categories(question: str) -> list[str] | None:
    """The categories a VLM-R1 OVD question lists (a Python list literal, or names separated by commas)."""
    low = question.lower()
    at = next((low.find(m) + len(m) for m in _LIST_MARKERS if m in low), -1)
    if at < 0:
        return None
    rest = question[at:].lstrip()
    if rest.startswith("["):
        depth, quote, end = 0, "", -1
        for i, ch in enumerate(rest):
            if quote:
                quote = "" if ch == quote and rest[i - 1] != "\\" else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        try:
            value = ast.literal_eval(rest[: end + 1]) if end > 0 else None
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value if v.strip()]
        return None
    head = rest.split(". ")[0].rstrip(".")
    names = [n.strip() for n in head.split(",") if n.strip()]
    return names or None


class VlmR1Ovd(DatasetFormat):
    """VLM-R1's OVD JSONL: ``{"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``.

    The human turn is kept as the question (it carries VLM-R1's answer instructions) and its list
    gives the categories, absent ones included; the gpt turn is the label (a json fence of
    ``{"bbox_2d", "label"}`` objects, or ``None`` for an image with none of them).  Flat records
    (``problem`` / ``solution``) are read too.  Image paths are relative to ``image_root``.
    """

    name: ClassVar[str] = "vlmr1_ovd"
    task: ClassVar[str] = "ovd"
    homepage: ClassVar[str] = "https://github.com/om-ai-lab/VLM-R1 (OVD records: its issue #246); D³ images"
    licence: ClassVar[str] = "VLM-R1: Apache-2.0; the images and annotations keep their own (D³: CC BY-NC 4.0)"

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix in (".json", ".jsonl")
                           and (split is None or p.stem == split))
            if len(files) != 1:
                raise ConfigError(f"{source}: {len(files)} VLM-R1 files match split {split!r}; give the file itself")
            source = files[0]
        root = image_root if image_root is not None else source.parent
        records, problems = [], Problems()
        for i, (where, rec) in enumerate(located_records(source)):
            try:
                records.append(self._record(dict(rec), root, f"{source.stem}-{i}", where))
            except ValueError as exc:
                problems.add(where, str(exc))
        problems.raise_if_any(f"VLM-R1 OVD file {source}")
        return FormatResult(records)

    @staticmethod
    def _record(rec: dict[str, Any], root: Path, default_id: str, where: str) -> dict[str, Any]:
        turns = [t for t in rec.pop("conversations", None) or [] if isinstance(t, dict)]
        image = rec.pop("image", None)
        while isinstance(image, list) and len(image) == 1:
            image = image[0]
        if not isinstance(image, str) or not image.strip():
            raise ValueError(f"'image' is {image!r}; give one image path (relative to the image folder)")
        question = rec.pop("problem", None) or (turns[0].get("value") if turns else None)
        if not isinstance(question, str) or not question.strip():
            raise ValueError("no question; the first conversation turn (or 'problem') must ask what to detect")
        question = question.replace("<image>", "").strip()
        answer = rec.pop("solution", None) if "solution" in rec else (turns[1].get("value") if len(turns) > 1 else None)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise ValueError("no answer; the second conversation turn (or 'solution') holds the boxes, or None")
        objects = answer if isinstance(answer, list) else parse_detections(answer) if isinstance(answer, str) else None
        if objects is None:
            raise ValueError(f"the answer {str(answer)[:120]!r} holds no readable list; write a ```json fence of "
                             '[{"bbox_2d": [x1, y1, x2, y2], "label": NAME}] objects, or None')
        clean = []
        for j, obj in enumerate(objects, start=1):
            det = to_detection(obj)
            if det is None or det["bbox_2d"][2] <= det["bbox_2d"][0] or det["bbox_2d"][3] <= det["bbox_2d"][1]:
                raise ValueError(f"object {j} ({str(obj)[:100]!r}) needs a bbox_2d with an area and a label")
            clean.append({"bbox_2d": [float(v) for v in det["bbox_2d"]], "label": det["label"]})
        categories = question_categories(question) or list(dict.fromkeys(o["label"] for o in clean))
        unlisted = sorted({o["label"] for o in clean} - set(categories))
        if unlisted:
            raise ValueError(f"the answer labels {unlisted} that the question does not list; list them in the question")
        return {"id": str(rec.pop("id", default_id)), "image": str((root / image.strip()).absolute()),
                "problem": question, "categories": categories, "solution": clean, **rec, SOURCE_KEY: where}


class Coco(DatasetFormat):
    """COCO ``instances_*.json``: one record per image, its categories (by name) and boxes.

    ``source`` is an ``instances_<split>.json`` file or the COCO folder holding ``annotations/``.
    Category ids with gaps are looked up, never indexed; ``names`` renames categories
    (``{"motorcycle": "motorbike"}``).  Crowd annotations (``iscrowd: 1``) are left out: they mark
    regions COCO's own evaluation ignores, which a VLM's list of boxes cannot express.  ``filter:
    coco_filter`` applies VLM-R1's COCO_filter rule per image: a category with more than
    ``max_boxes`` boxes, or with a crowd box, is left out of the question and the label, and an image
    left with nothing is dropped.  ``categories: image`` asks for the categories the image has;
    ``all`` asks for every category (absent ones are then negatives).  Images are read from
    ``image_root``, else ``<coco>/<split>`` (``val2017``).
    """

    name: ClassVar[str] = "coco"
    task: ClassVar[str] = "ovd"
    homepage: ClassVar[str] = "https://cocodataset.org/#download (annotations_trainval2017.zip, val2017.zip)"
    licence: ClassVar[str] = "annotations CC BY 4.0; images under their Flickr terms"

    def __init__(self, *, filter: Literal["none", "coco_filter"] = "none", max_boxes: int = 10,
                 categories: Literal["image", "all"] = "image", names: dict[str, str] | None = None,
                 bad_boxes: Literal["error", "skip"] = "error") -> None:
        if filter not in ("none", "coco_filter"):
            raise ValueError(f"filter must be 'none' or 'coco_filter', got {filter!r}")
        if categories not in ("image", "all"):
            raise ValueError(f"categories must be 'image' or 'all', got {categories!r}")
        if bad_boxes not in ("error", "skip"):
            raise ValueError(f"bad_boxes must be 'error' or 'skip', got {bad_boxes!r}")
        self.filter, self.max_boxes, self.categories = filter, int(max_boxes), categories
        self.names, self.bad_boxes = dict(names or {}), bad_boxes

    def _file(self, source: Path, split: str | None) -> Path:
        if source.is_file():
            return source
        folder = source / "annotations" if (source / "annotations").is_dir() else source
        files = {p.stem.removeprefix("instances_"): p for p in folder.glob("instances_*.json")}
        if split in files:
            return files[split]
        raise ConfigError(f"{source}: no instances_{split}.json; instances files here: "
                          f"{', '.join(sorted(files)) or 'none'} (name one with --split, or data.format_options: {{split: NAME}})")

    def splits(self, source: Path) -> list[str]:
        if source.is_file():
            return [source.stem.removeprefix("instances_")]
        folder = source / "annotations" if (source / "annotations").is_dir() else source
        return sorted(p.stem.removeprefix("instances_") for p in folder.glob("instances_*.json"))

    def prepare(self, source: Path, *, image_root: Path | None = None, image_roots: Mapping[str, Path] | None = None,
                workdir: Path | None = None) -> dict[str, FormatResult]:
        name = "coco_filter" if self.filter == "coco_filter" else "coco"
        root = (image_roots or {}).get(name, image_root)
        return {f"{name}/{split}": self.read(source, split=split, image_root=root) for split in self.splits(source)}

    @staticmethod
    def _images(path: Path, split: str, image_root: Path | None) -> Path:
        if image_root is not None:
            return image_root
        for guess in (path.parent.parent / split, path.parent / split):
            if guess.is_dir():
                return guess
        raise ConfigError(f"{path}: no image folder {path.parent.parent / split}; pass the folder holding the "
                          f"{split} images as --image-root (data.image_root)")

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        path = self._file(source, split or "val2017")
        split = path.stem.removeprefix("instances_")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise ConfigError(f"{path}: not a COCO instances file (no 'annotations' list)")
        problems, notes = Problems(), []
        cats: dict[Any, str] = {}
        for n, cat in enumerate(data.get("categories") or [], start=1):
            if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
                problems.add(f"{path} category {n}", f"{str(cat)[:80]!r} has no name", "give it 'id' and 'name'")
                continue
            cats[cat.get("id")] = self.names.get(cat["name"], cat["name"])
        images = {im.get("id"): im for im in data.get("images") or [] if isinstance(im, dict)}
        per_image: dict[Any, list[tuple[str, list[float]]]] = defaultdict(list)
        crowded: dict[Any, set[str]] = defaultdict(set)
        skipped = crowd = 0
        for n, ann in enumerate(data["annotations"], start=1):
            where = f"{path} annotation {n}" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
            if not isinstance(ann, dict):
                problems.add(where, "is not an object", "re-download the annotations")
                continue
            label = cats.get(ann.get("category_id"))
            if label is None:
                problems.add(where, f"its category_id {ann.get('category_id')} is not in 'categories' "
                             f"(ids: {sorted(cats)[:12]}...)", "add the category or fix the id")
                continue
            if ann.get("image_id") not in images:
                problems.add(where, f"its image_id {ann.get('image_id')} is not in 'images'", "fix the id")
                continue
            if ann.get("iscrowd"):
                crowd += 1
                crowded[ann["image_id"]].add(label)
                continue
            box = _xywh_box(ann.get("bbox"))
            if box is None:
                if self.bad_boxes == "skip":
                    skipped += 1
                    continue
                problems.add(where, f"its bbox {ann.get('bbox')!r} is not [x, y, w, h] with a positive width and "
                             "height", "fix it, or convert with --option bad_boxes=skip to leave such boxes out")
                continue
            per_image[ann["image_id"]].append((label, box))
        problems.raise_if_any(f"COCO file {path}")
        image_dir = self._images(path, split, image_root)
        records, filtered, empty = [], 0, 0
        for image_id, im in images.items():
            objects = per_image.get(image_id, [])
            if self.filter == "coco_filter":
                counts: dict[str, int] = defaultdict(int)
                for label, _ in objects:
                    counts[label] += 1
                dropped = {c for c, k in counts.items() if k > self.max_boxes} | crowded.get(image_id, set())
                filtered += len(dropped)
                objects = [(label, b) for label, b in objects if label not in dropped]
            present = list(dict.fromkeys(label for label, _ in objects))
            if not present and self.categories == "image":
                empty += 1
                continue
            records.append({
                "id": f"{split}-{image_id}", "image": str((image_dir / str(im.get("file_name"))).absolute()),
                "width": im.get("width"), "height": im.get("height"), "image_id": image_id,
                "categories": present if self.categories == "image" else list(dict.fromkeys(cats.values())),
                "solution": [{"bbox_2d": b, "label": label} for label, b in objects],
                SOURCE_KEY: f"{path} image {image_id}",
            })
        notes.append(f"{crowd} crowd annotation(s) left out (COCO evaluates them as ignore regions)")
        if skipped:
            notes.append(f"{skipped} annotation(s) without a box area left out (bad_boxes: skip)")
        if self.filter == "coco_filter":
            notes.append(f"COCO_filter: {filtered} (image, category) pair(s) with more than {self.max_boxes} boxes "
                         "or a crowd box left out")
        if empty:
            notes.append(f"{empty} image(s) with no category left to ask for dropped")
        return FormatResult(records, notes)


class D3(DatasetFormat):
    """D³ (described object detection): its toolkit's pickles, one record per image.

    ``source`` is the D³ folder holding ``d3_pkl/`` (``sentences.pkl``, ``annotations.pkl``,
    ``images.pkl``, ``groups.pkl``, as ``d_cube.D3`` reads them) and ``d3_images/`` (else
    ``image_root``).  ``setting: intra`` (D³'s default protocol) asks each image for the descriptions
    of its own group, ``inter`` for every description; ``descriptions``: ``full`` (all), ``pres``
    (presence only) or ``abs`` (absence only).  A description with no box in the image is a
    negative: asked, with nothing to find.
    """

    name: ClassVar[str] = "d3"
    task: ClassVar[str] = "ovd"
    homepage: ClassVar[str] = "https://github.com/shikras/d-cube (d3_images.zip, d3_pkl.zip, d3_json.zip)"
    licence: ClassVar[str] = "CC BY-NC 4.0 (the d-cube repository's licence); images under their sources' terms"

    def __init__(self, *, setting: Literal["intra", "inter"] = "intra",
                 descriptions: Literal["full", "pres", "abs"] = "full") -> None:
        if setting not in ("intra", "inter"):
            raise ValueError(f"setting must be 'intra' or 'inter', got {setting!r}")
        if descriptions not in ("full", "pres", "abs"):
            raise ValueError(f"descriptions must be 'full', 'pres' or 'abs', got {descriptions!r}")
        self.setting, self.descriptions = setting, descriptions

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        pkl = source / "d3_pkl" if (source / "d3_pkl").is_dir() else source
        names = ("sentences", "annotations", "images", "groups")
        missing = [n for n in names if not (pkl / f"{n}.pkl").is_file()]
        if missing:
            raise ConfigError(f"{pkl}: missing {', '.join(f'{n}.pkl' for n in missing)}; give the folder d3_pkl.zip "
                              "unpacks into (or the D³ folder holding d3_pkl/)")
        sents, anns, images, groups = (load_plain_pickle(pkl / f"{n}.pkl") for n in names)
        image_dir = image_root or (source / "d3_images" if (source / "d3_images").is_dir() else None)
        if image_dir is None:
            raise ConfigError(f"{source}: no d3_images/ folder; pass the folder d3_images.zip unpacks into as --image-root")
        wanted = {sid for sid, s in sents.items() if isinstance(s, dict) and (
            self.descriptions == "full" or bool(s.get("is_negative")) == (self.descriptions == "abs"))}
        problems, records = Problems(), []
        for img_id, im in images.items():
            where = f"{pkl / 'images.pkl'} image {img_id}"
            if not isinstance(im, dict):
                problems.add(where, "is not a dict", "re-download d3_pkl.zip")
                continue
            if self.setting == "intra":
                group = groups.get(im.get("group_id"))
                if not isinstance(group, dict):
                    problems.add(where, f"its group_id {im.get('group_id')} is not in groups.pkl", "re-download d3_pkl.zip")
                    continue
                asked = [sid for sid in group.get("inner_sent_id") or [] if sid in wanted]
            else:
                asked = sorted(wanted)
            unknown = [sid for sid in asked if sid not in sents]
            if unknown:
                problems.add(where, f"its group lists sentence ids {unknown} that sentences.pkl lacks", "re-download")
                continue
            objects = []
            for aid in im.get("anno_id") or []:
                ann = anns.get(aid)
                box = _xywh_box(ann.get("bbox")) if isinstance(ann, dict) else None
                if box is None:
                    problems.add(f"{pkl / 'annotations.pkl'} annotation {aid}",
                                 "is missing or has no [x, y, w, h] box with an area", "re-download d3_pkl.zip")
                    continue
                for sid in ann.get("sent_id") or []:
                    if sid in asked:
                        objects.append({"bbox_2d": box, "label": str(sents[sid]["raw_sent"]).strip()})
            if not asked:
                continue
            records.append({
                "id": f"d3-{img_id}", "image": str((image_dir / str(im.get("file_name"))).absolute()),
                "width": im.get("width"), "height": im.get("height"),
                "categories": [str(sents[sid]["raw_sent"]).strip() for sid in asked], "solution": objects,
                "group_id": im.get("group_id"), SOURCE_KEY: where,
            })
        problems.raise_if_any(f"D³ annotations {pkl}")
        return FormatResult(records)
