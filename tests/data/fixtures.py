"""Tiny copies of the datasets the field ships, written in each format's documented layout.

Every writer follows the layout its source documents (cited per function): a few records, tiny images,
and the quirks real downloads have.  ``bad=True`` adds records that cannot be right, each a mistake a
real file can hold; the tests check that every one of them is named with its file, its record and a fix.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

#: images the tiny policy's processor keeps as they are (56 x 56 is its minimum), so frames are the identity
SIDE = 56


def image(path: Path, *, size: tuple[int, int] = (SIDE, SIDE), box: list[float] | None = None, fmt: str | None = None,
          colour: tuple[int, int, int] = (200, 60, 60)) -> Path:
    """A small image with a filled rectangle where the label says (so it is not blank)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (235, 235, 235))
    if box is not None:
        ImageDraw.Draw(im).rectangle([box[0], box[1], max(box[0], box[2] - 1), max(box[1], box[3] - 1)], fill=colour)
    im.save(path, format=fmt)
    return path


# ---- Python 2 pickles (the refer API's refs(unc).p was written by Python 2's cPickle) -------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` as Python 2 wrote its byte strings (``SHORT_BINSTRING`` / ``BINSTRING``, UTF-8 bytes)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj: str) -> None:
        data = obj.encode("utf-8")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + struct.pack("<B", len(data)) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_str


def py2_pickle(obj: Any, path: Path) -> Path:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


# ---- refer (lichengunc/refer: data/<dataset>/refs(<split_by>).p + instances.json, images/mscoco/images/train2014) ---


def coco_name(image_id: int, prefix: str = "COCO_train2014_") -> str:
    return f"{prefix}{image_id:012d}.jpg"


def write_refer(root: Path, *, dataset: str = "refcoco", split_by: str = "unc", bad: bool = False) -> Path:
    """The refer API's layout under ``root`` (``root`` plays ``refer/data``); returns the dataset folder.

    Refs follow the README's comment: ``{ref_id, ann_id, category_id, file_name, image_id, split, sent_ids,
    sentences: [{tokens, raw, sent_id, sent}]}``; ``file_name`` carries the annotation id, as in the
    real pickles ("ignore filename").  Quirks: several sentences per ref, a ``testAB`` split (the API's
    ``testA`` and ``testB`` both take it), a non-ASCII sentence in a Python 2 byte string.
    """
    folder = root / dataset
    images_dir = root / "images" / "mscoco" / "images" / "train2014"
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog", "supercategory": "animal"}]
    plan = [  # (image_id, ann_id, category, bbox xywh, split, sentences)
        (11, 101, 1, [4, 6, 20, 30], "train", ["man on the left", "left guy"]),
        (11, 102, 18, [30, 20, 18, 24], "train", ["the dog"]),
        (12, 103, 1, [10, 10, 28, 28], "val", ["woman in red"]),
        (13, 104, 18, [2.5, 3.25, 40, 20], "val", ["small dog", "caf\u00e9 dog"]),
        (14, 105, 1, [8, 8, 30, 40], "testA", ["person standing"]),
        (15, 106, 1, [5, 5, 20, 20], "testB", ["person sitting"]),
        (16, 107, 18, [1, 1, 10, 12], "testAB", ["tiny dog"]),
    ]
    if bad:
        plan += [
            (17, 999, 1, [0, 0, 10, 10], "val", ["a ref whose annotation is missing"]),  # ann 999 not in instances
            (18, 108, 1, [5, 5, 0, 12], "val", ["a zero-width box"]),
            (19, 109, 1, [5, 5, 12, 12], "val", []),  # a ref without sentences
        ]
    refs, anns, imgs, sent_id = [], [], {}, 1000
    for ref_id, (image_id, ann_id, cat, bbox, split, sents) in enumerate(plan, start=1):
        sentences = []
        for text in sents:
            sentences.append({"tokens": text.split(), "raw": text, "sent_id": sent_id, "sent": text})
            sent_id += 1
        refs.append({"ref_id": ref_id, "ann_id": ann_id, "category_id": cat, "image_id": image_id, "split": split,
                     "file_name": f"{coco_name(image_id)[:-4]}_{ann_id}.jpg",
                     "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})
        if ann_id != 999:
            anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0,
                         "area": bbox[2] * bbox[3], "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1]]]})
        imgs[image_id] = {"id": image_id, "file_name": coco_name(image_id), "width": SIDE, "height": SIDE}
        image(images_dir / coco_name(image_id), box=[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
    folder.mkdir(parents=True, exist_ok=True)
    py2_pickle(refs, folder / f"refs({split_by}).p")
    (folder / "instances.json").write_text(json.dumps({"images": list(imgs.values()), "annotations": anns,
                                                       "categories": cats}))
    return folder


# ---- VLM-R1's REC files (rec_jsons_processed/*.json, its issue #11; training JSONL, its README) ----------------


def vlmr1_rec_record(i: int, image_name: str, box: list[float], caption: str) -> dict[str, Any]:
    """One record of VLM-R1's rec_jsons_processed files, with every field its issue #11 shows."""
    x1, y1, x2, y2 = box
    return {"height": SIDE, "width": SIDE, "id": i, "original_id": 1719310 + i, "dataset_name": "refcoco",
            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "image_id": i, "category_id": 1,
            "bbox_list": [[x1, y1, x2 - 1, y2 - 1]], "text_type": "caption", "image": image_name,
            "problem": f"Please provide the bounding box coordinate of the region this sentence describes: {caption}.",
            "normal_caption": caption, "solution": box,
            "normalized_solution": [int(v / SIDE * 1000) for v in box]}


def write_vlmr1_rec(root: Path, *, bad: bool = False) -> tuple[Path, Path, Path]:
    """``(json_list, jsonl, image_folder)``: a rec_jsons_processed-style JSON list with bare file names, and a
    training JSONL in the README's ``conversations`` form with ``image`` as a list and boxes as strings."""
    images = root / "coco"
    records = []
    for i, box in enumerate(([4.0, 6.0, 24.0, 36.0], [10.5, 10.0, 38.0, 38.25], [0.0, 0.0, 28.0, 28.0])):
        name = f"COCO_train2014_{i:012d}.jpg"
        image(images / name, box=box)
        records.append(vlmr1_rec_record(i, name, box, f"object number {i}"))
    lines = [
        {"id": 10, "image": ["COCO_train2014_000000000000.jpg"], "conversations": [
            {"from": "human", "value": "<image>Please provide the bounding box coordinate of the region this "
                                       "sentence describes: object number 0."},
            {"from": "gpt", "value": "<answer>[4, 6, 24, 36]</answer>"}]},
        {"id": 11, "image": [["COCO_train2014_000000000001.jpg"]], "problem": "Where is object number 1?",
         "solution": "[10, 10, 38, 38]"},
    ]
    if bad:
        records.append({"image": "COCO_train2014_000000000002.jpg", "normal_caption": "no box here"})  # absent
        records.append({"image": "COCO_train2014_000000000002.jpg", "normal_caption": "empty", "solution": []})
        records.append({"image": "COCO_train2014_000000000009.jpg", "normal_caption": "inverted",
                        "solution": [30, 30, 10, 10]})
        lines.append({"id": 12, "image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image><image>two images"}, {"from": "gpt", "value": "[1, 2, 3, 4]"}]})
        lines.append({"id": 13, "image": "COCO_train2014_000000000000.jpg", "conversations": [
            {"from": "human", "value": "<image>where?"}, {"from": "gpt", "value": "<answer>somewhere</answer>"}]})
    listing = root / "rec_jsons_processed" / "refcoco_val.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(records, indent=4))
    jsonl = root / "rec_jsonsl_train" / "refcoco_train.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return listing, jsonl, images


# ---- VLM-R1's OVD JSONL (its issue #246: the record its authors posted) -----------------------------------------


def ovd_question(categories: list[str]) -> str:
    return ("Please carefully check the image and detect the following objects: " + repr(categories) + ". Output "
            "the bbox coordinates of detected objects in JSON format in <answer></answer>. The bbox coordinate format "
            'should be: \n```json\n[{"bbox_2d": [x1, y1, x2, y2], "label": "object name"}]\n```\n. If no targets '
            'are detected in the image, simply respond with "None".')


def write_vlmr1_ovd(root: Path, *, bad: bool = False) -> tuple[Path, Path]:
    """``(jsonl, image_folder)`` in the form of VLM-R1 issue #246: categories as a Python list literal (an
    apostrophe makes one double-quoted), the answer a json fence, ``None`` for an image without targets."""
    images = root / "d3_images"
    cats = ["railings being crossed by horses", "a horse running or jumping", "equestrian rider's helmet",
            "person holding a torch"]
    objects = [{"bbox_2d": [3, 18, 50, 40], "label": cats[0]}, {"bbox_2d": [20, 5, 44, 40], "label": cats[1]},
               {"bbox_2d": [30, 4, 36, 10], "label": cats[2]}]
    image(images / "equestrian" / "006_14295751692.jpg", box=[3, 18, 50, 40])
    image(images / "equestrian" / "002_3605899422.jpg")
    lines = [
        {"id": 1, "image": "equestrian/006_14295751692.jpg", "conversations": [
            {"from": "human", "value": ovd_question(cats)},
            {"from": "gpt", "value": "```json\n" + json.dumps(objects) + "\n```"}]},
        {"id": 2, "image": "equestrian/002_3605899422.jpg", "conversations": [
            {"from": "human", "value": ovd_question(cats[3:])}, {"from": "gpt", "value": "None"}]},
    ]
    if bad:
        lines.append({"id": 3, "image": "equestrian/002_3605899422.jpg", "conversations": [
            {"from": "human", "value": ovd_question(cats)}, {"from": "gpt", "value": "```json\n[{\"bbox_2d\": [1, 2"}]})
        lines.append({"id": 4, "image": "equestrian/002_3605899422.jpg", "conversations": [
            {"from": "human", "value": ovd_question(cats[:1])},
            {"from": "gpt", "value": "```json\n" + json.dumps([{"bbox_2d": [1, 1, 9, 9], "label": "a cat"}]) + "\n```"}]})
        lines.append({"id": 5, "image": "equestrian/002_3605899422.jpg", "conversations": [
            {"from": "human", "value": ovd_question(cats)}]})  # no answer turn
    path = root / "ovd_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path, images


# ---- COCO instances (cocodataset.org "Data format": images, annotations [x, y, w, h], categories) --------------


def write_coco(root: Path, *, bad: bool = False) -> Path:
    """``root/annotations/instances_val2017.json`` + ``root/val2017/*.jpg``; returns the annotations file.

    Quirks: category ids with gaps (1, 3, 90), a crowd annotation with RLE segmentation, an image where one
    category has 11 boxes (COCO_filter leaves that category out), an image with no annotation.
    """
    cats = [{"supercategory": "person", "id": 1, "name": "person"}, {"supercategory": "vehicle", "id": 3, "name": "car"},
            {"supercategory": "indoor", "id": 90, "name": "toothbrush"}]
    imgs = [{"license": 4, "file_name": f"{i:012d}.jpg", "coco_url": "", "height": SIDE, "width": SIDE,
             "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": i} for i in (139, 285, 632, 724)]
    anns, next_id = [], 1

    def add(image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> None:
        nonlocal next_id
        seg = {"counts": [0, 10, 46], "size": [SIDE, SIDE]} if crowd else [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1]]]
        anns.append({"segmentation": seg, "area": bbox[2] * bbox[3], "iscrowd": crowd, "image_id": image_id,
                     "bbox": bbox, "category_id": cat, "id": next_id})
        next_id += 1

    add(139, 1, [4, 4, 20, 30])
    add(139, 90, [30, 30, 6.5, 10])
    add(285, 3, [2, 2, 40, 30])
    add(285, 1, [0, 0, 56, 56], crowd=1)  # crowd: the person category of this image is not scorable
    add(285, 1, [40, 40, 10, 10])
    for k in range(11):  # 11 cars in image 632: COCO_filter leaves "car" out of it
        add(632, 3, [k * 5, 2, 4, 4])
    add(632, 1, [10, 30, 20, 20])
    if bad:
        add(139, 7, [1, 1, 5, 5])  # category id 7 is not in the categories (a gap is not an id)
        add(999, 1, [1, 1, 5, 5])  # an image that does not exist
        add(724, 1, [3, 3, -4, 5])  # a negative width
    for im in imgs:
        boxes = [a["bbox"] for a in anns if a["image_id"] == im["id"] and not a["iscrowd"]]
        image(root / "val2017" / im["file_name"], box=[boxes[0][0], boxes[0][1], boxes[0][0] + boxes[0][2],
                                                      boxes[0][1] + boxes[0][3]] if boxes else None)
    path = root / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {"year": 2017}, "licenses": [], "images": imgs, "annotations": anns,
                                "categories": cats}))
    return path


# ---- D³ (shikras/d-cube doc.md: sentences/annotations/images/groups .pkl, dicts keyed by id) ----------------------


def write_d3(root: Path, *, bad: bool = False) -> Path:
    """``root/d3_pkl/*.pkl`` + ``root/d3_images/<group>/*.jpg`` as ``d_cube.D3`` reads them; returns ``root``.

    Group 1 has three descriptions, one an absence description with no box; an annotation names two
    descriptions at once (both get the box).
    """
    sents = {1: {"id": 1, "anno_id": [1], "group_id": [1], "is_negative": False, "raw_sent": "a horse running or jumping",
                 "raw_sent_zh": ""},
             2: {"id": 2, "anno_id": [1, 2], "group_id": [1], "is_negative": False, "raw_sent": "an animal",
                 "raw_sent_zh": ""},
             3: {"id": 3, "anno_id": [], "group_id": [1], "is_negative": True, "raw_sent": "horseman without helmet",
                 "raw_sent_zh": ""},
             4: {"id": 4, "anno_id": [3], "group_id": [2], "is_negative": False, "raw_sent": "a blue stop sign",
                 "raw_sent_zh": ""}}
    anns = {1: {"id": 1, "sent_id": [1, 2], "segmentation": {"size": [SIDE, SIDE], "counts": b"PP"}, "area": 400,
                "iscrowd": 0, "image_id": 0, "bbox": [10, 10, 20, 20], "group_id": 1},
            2: {"id": 2, "sent_id": [2], "segmentation": {"size": [SIDE, SIDE], "counts": b"PP"}, "area": 100,
                "iscrowd": 0, "image_id": 1, "bbox": [2, 2, 10, 10], "group_id": 1},
            3: {"id": 3, "sent_id": [4], "segmentation": {"size": [SIDE, SIDE], "counts": b"PP"}, "area": 64,
                "iscrowd": 0, "image_id": 2, "bbox": [30, 30, 8, 8], "group_id": 2}}
    imgs = {0: {"id": 0, "file_name": "equestrian/001.jpg", "height": SIDE, "width": SIDE, "flickr_url": "",
                "anno_id": [1], "group_id": 1, "license": ""},
            1: {"id": 1, "file_name": "equestrian/002.jpg", "height": SIDE, "width": SIDE, "flickr_url": "",
                "anno_id": [2], "group_id": 1, "license": ""},
            2: {"id": 2, "file_name": "parking/001.jpg", "height": SIDE, "width": SIDE, "flickr_url": "",
                "anno_id": [3], "group_id": 2, "license": ""}}
    groups = {1: {"id": 1, "pos_sent_id": [1, 2], "inner_sent_id": [1, 2, 3], "outer_sent_id": [], "img_id": [0, 1],
                  "scene": ["sports"], "group_name": "equestrian", "group_name_zh": ""},
              2: {"id": 2, "pos_sent_id": [4], "inner_sent_id": [4], "outer_sent_id": [], "img_id": [2],
                  "scene": ["street"], "group_name": "parking", "group_name_zh": ""}}
    if bad:
        imgs[3] = {"id": 3, "file_name": "parking/002.jpg", "height": SIDE, "width": SIDE, "anno_id": [77],
                   "group_id": 2}  # annotation 77 does not exist
        imgs[4] = {"id": 4, "file_name": "parking/003.jpg", "height": SIDE, "width": SIDE, "anno_id": [],
                   "group_id": 9}  # group 9 does not exist
    for im in imgs.values():
        box = next((anns[a]["bbox"] for a in im["anno_id"] if a in anns), None)
        image(root / "d3_images" / im["file_name"], box=[box[0], box[1], box[0] + box[2], box[1] + box[3]] if box else None)
    pkl = root / "d3_pkl"
    pkl.mkdir(parents=True, exist_ok=True)
    for name, obj in (("sentences", sents), ("annotations", anns), ("images", imgs), ("groups", groups)):
        with (pkl / f"{name}.pkl").open("wb") as f:
            pickle.dump(obj, f)
    return root


# ---- 3D-FRONT (scene JSON: furniture, mesh, scene.room[].children) + 3D-FUTURE (model_info.json, raw_model.obj) ---


def write_obj(path: Path, size: tuple[float, float, float], *, offset: tuple[float, float, float] = (0, 0, 0)) -> None:
    """A box mesh of ``size`` (x, y, z) as a Wavefront OBJ: 8 vertices, 12 triangles."""
    sx, sy, sz = size
    ox, oy, oz = offset
    vs = [(ox + x * sx - sx / 2, oy + y * sy, oz + z * sz - sz / 2) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    faces = [(1, 2, 4), (1, 4, 3), (5, 6, 8), (5, 8, 7), (1, 2, 6), (1, 6, 5), (3, 4, 8), (3, 8, 7), (1, 3, 7),
             (1, 7, 5), (2, 4, 8), (2, 8, 6)]
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in vs) + "".join(f"f {a} {b} {c}\n" for a, b, c in faces))


def yaw_quaternion(degrees: float) -> list[float]:
    """3D-FRONT's ``rot``: a quaternion [x, y, z, w] turning by ``degrees`` about the up axis y."""
    import math

    t = math.radians(degrees) / 2
    return [0.0, math.sin(t), 0.0, math.cos(t)]


def write_3dfront(root: Path, *, bad: bool = False) -> Path:
    """``root/3D-FRONT/<uid>.json`` + ``root/3D-FUTURE-model/`` (model_info.json, <jid>/raw_model.obj).

    One scene, two rooms: a bedroom with a bed facing +z (yaw 0), a wardrobe turned by 90 degrees and a chair
    turned by 37 (a rotated layout), and a room holding only a lamp mesh (no furniture: left out).
    """
    future = root / "3D-FUTURE-model"
    models = [{"model_id": "bed-1", "style": "Modern", "theme": None, "material": None,
               "super-category": "Bed", "category": "King-size Bed"},
              {"model_id": "wardrobe-1", "style": None, "theme": None, "material": None,
               "super-category": "Cabinet/Shelf/Desk", "category": "Wardrobe"},
              {"model_id": "chair-1", "style": None, "theme": None, "material": None,
               "super-category": "Chair", "category": "Dining Chair"}]
    write_obj(future / "bed-1" / "raw_model.obj", (1.8, 0.5, 2.0))
    write_obj(future / "wardrobe-1" / "raw_model.obj", (1.2, 2.0, 0.6))
    write_obj(future / "chair-1" / "raw_model.obj", (0.5, 0.9, 0.5))
    (future / "model_info.json").write_text(json.dumps(models))
    floor = {"uid": "floor-1", "jid": "", "type": "Floor",
             "xyz": [-2.5, 0, -2.5, 2.5, 0, -2.5, 2.5, 0, 2.5, -2.5, 0, 2.5], "normal": [0, 1, 0] * 4,
             "uv": [0, 0] * 4, "faces": [0, 1, 2, 0, 2, 3]}
    furniture = [{"uid": "f1", "jid": "bed-1", "title": "bed", "valid": True},
                 {"uid": "f2", "jid": "wardrobe-1", "title": "wardrobe", "valid": True},
                 {"uid": "f3", "jid": "chair-1", "title": "chair", "valid": True},
                 {"uid": "f4", "jid": "lamp-0", "title": "lamp", "valid": False}]
    children = [{"ref": "floor-1", "instanceid": "mesh/0", "pos": [0, 0, 0], "rot": [0, 0, 0, 1], "scale": [1, 1, 1]},
                {"ref": "f1", "instanceid": "furniture/1", "pos": [-1.0, 0, 1.0], "rot": yaw_quaternion(0),
                 "scale": [1, 1, 1]},
                {"ref": "f2", "instanceid": "furniture/2", "pos": [2.0, 0, -1.0], "rot": yaw_quaternion(90),
                 "scale": [1, 1, 1]},
                {"ref": "f3", "instanceid": "furniture/3", "pos": [0.8, 0, -1.8], "rot": yaw_quaternion(37),
                 "scale": [1, 1, 1]}]
    if bad:
        furniture.append({"uid": "f5", "jid": "sofa-404", "title": "sofa", "valid": True})  # no such model
        children.append({"ref": "f5", "instanceid": "furniture/5", "pos": [0, 0, 0], "rot": [0, 0, 0, 1],
                         "scale": [1, 1, 1]})
        children.append({"ref": "f3", "instanceid": "furniture/6", "pos": [0, 0, 0], "rot": [0.7, 0, 0, 0.7],
                         "scale": [1, 1, 1]})  # tilted: not a rotation about the up axis
    scene = {"uid": "0003d406-5f27-4bbf-94cd-1cff7c310ba1", "jobid": "", "design_version": "", "code_version": "",
             "north_vector": [0, 1, 0], "furniture": furniture, "mesh": [floor], "material": [], "lights": [],
             "scene": {"ref": "", "pos": [0, 0, 0], "rot": [0, 0, 0, 1], "scale": [1, 1, 1], "room": [
                 {"type": "Bedroom", "instanceid": "Bedroom-3921", "size": 25.0, "pos": [0, 0, 0], "rot": [0, 0, 0, 1],
                  "scale": [1, 1, 1], "children": children},
                 {"type": "Hallway", "instanceid": "Hallway-17", "size": 4.0, "pos": [0, 0, 0], "rot": [0, 0, 0, 1],
                  "scale": [1, 1, 1], "children": [{"ref": "f4", "instanceid": "furniture/4", "pos": [0, 0, 0],
                                                    "rot": [0, 0, 0, 1], "scale": [1, 1, 1]}]}]}}
    path = root / "3D-FRONT" / f"{scene['uid']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scene))
    return path.parent


# ---- LISA ReasonSeg (dvlab-research/LISA README: name.jpg + name.json with text, is_sentence, shapes) -----------


def write_reasonseg(root: Path, *, bad: bool = False) -> Path:
    """``root/ReasonSeg/test/*.jpg|json``; one annotation in cp1252 (LISA's reader falls back to it)."""
    folder = root / "ReasonSeg" / "test"
    shapes = [{"label": "target", "points": [[10, 12], [30, 12], [30, 40], [10, 40]], "shape_type": "polygon"},
              {"label": "target", "points": [[34, 5], [44, 5], [40, 15]], "shape_type": "polygon"},
              {"label": "ignore", "points": [[0, 0], [56, 0], [56, 3]], "shape_type": "polygon"},
              {"label": "flag", "points": [[0, 0], [1, 1], [0, 1]], "shape_type": "polygon"}]
    entries = {"img_1": {"text": ["What can keep the food cold?", "Which object stores milk?"], "is_sentence": True,
                         "shapes": shapes},
               "img_2": {"text": ["the caf\u00e9 sign"], "is_sentence": False,
                         "shapes": [{"label": "target", "points": [[5, 5], [20, 5], [20, 25]], "shape_type": "polygon"}]}}
    if bad:
        entries["img_3"] = {"text": ["nothing is marked"], "is_sentence": True, "shapes": [shapes[2]]}
    for name, anno in entries.items():
        image(folder / f"{name}.jpg", box=[10, 12, 30, 40])
        text = json.dumps(anno, ensure_ascii=False)
        (folder / f"{name}.json").write_bytes(text.encode("cp1252" if name == "img_2" else "utf-8"))
    return root / "ReasonSeg"
