"""OVD dataset formats: VLM-R1's OVD JSONL, COCO instances (and VLM-R1's COCO_filter rule), D³'s toolkit pickles."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from syngrpo.data.formats import DatasetError, read_format, write_converted
from syngrpo.plugins import get_registry
from tasks_ovd.formats import question_categories
from tests.data import fixtures

REG = get_registry()


def _ovd(tmp_path, result):
    return REG.create("tasks", "ovd", profile="vlmr1").load(write_converted(result, tmp_path / "out.jsonl"))


# ---- VLM-R1's OVD JSONL ----------------------------------------------------------------------------------------------


def test_vlmr1_ovd_records_keep_the_question_and_its_categories_absent_ones_included(tmp_path):
    path, images = fixtures.write_vlmr1_ovd(tmp_path)
    result = read_format(REG, "vlmr1_ovd", path, image_root=images)
    first, second = result.records
    assert first["categories"] == ["railings being crossed by horses", "a horse running or jumping",
                                   "equestrian rider's helmet", "person holding a torch"]  # the apostrophe's quoting
    assert [o["label"] for o in first["solution"]][2] == "equestrian rider's helmet"
    assert second["solution"] == [] and second["categories"] == ["person holding a torch"]  # "None": a negative
    samples = _ovd(tmp_path, result)
    assert samples[0].problem.startswith("Please carefully check the image") and samples[1].solution == []


def test_question_categories_read_both_forms_vlmr1_wrote():
    assert question_categories("detect the following objects: ['a', \"b's\"]. Output") == ["a", "b's"]
    assert question_categories("detect the following targets: railings, a horse running. Output") == \
        ["railings", "a horse running"]
    assert question_categories("Find the cats.") is None


def test_every_bad_vlmr1_ovd_line_is_named(tmp_path):
    path, images = fixtures.write_vlmr1_ovd(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "vlmr1_ovd", path, image_root=images)
    text = str(err.value)
    assert f"{path} line 3: the answer" in text and "holds no readable list" in text
    assert f"{path} line 4: the answer labels ['a cat'] that the question does not list" in text
    assert f"{path} line 5: no answer" in text


# ---- COCO --------------------------------------------------------------------------------------------------------------


def test_coco_images_and_boxes_agree_with_pycocotools(tmp_path):
    """Categories by id (with gaps), crowd boxes left out: what pycocotools' COCO index says, image by image."""
    from pycocotools.coco import COCO

    ann_file = fixtures.write_coco(tmp_path)
    result = read_format(REG, "coco", tmp_path)
    coco = COCO(str(ann_file))
    for record in result.records:
        ids = coco.getAnnIds(imgIds=[record["image_id"]], iscrowd=False)
        want = [(coco.loadCats(a["category_id"])[0]["name"], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                              a["bbox"][1] + a["bbox"][3]]) for a in coco.loadAnns(ids)]
        assert [(o["label"], o["bbox_2d"]) for o in record["solution"]] == want
        assert os.path.isfile(record["image"])
    assert sorted(r["image_id"] for r in result.records) == [139, 285, 632]  # 724 has nothing to ask for
    assert any("1 crowd annotation(s) left out" in n for n in result.notes)
    assert len(_ovd(tmp_path, result)) == 3


def test_coco_filter_leaves_out_categories_with_more_than_ten_boxes_or_a_crowd_box(tmp_path):
    fixtures.write_coco(tmp_path)
    records = {r["image_id"]: r for r in read_format(REG, "coco_filter", tmp_path, split="val2017").records}
    assert Counter(o["label"] for o in records[632]["solution"]) == {"person": 1}  # 11 cars: out
    assert records[632]["categories"] == ["person"]
    assert records[285]["categories"] == ["car"]  # its persons hold a crowd box: not scorable without ignore regions
    assert records[139]["categories"] == ["person", "toothbrush"]  # id 90 after a gap


def test_coco_categories_all_asks_for_every_category(tmp_path):
    fixtures.write_coco(tmp_path)
    records = read_format(REG, "coco", tmp_path, options={"categories": "all", "names": {"car": "automobile"}}).records
    assert {tuple(r["categories"]) for r in records} == {("person", "automobile", "toothbrush")}
    assert len(records) == 4  # 724 is a negative image now


def test_every_bad_coco_annotation_is_named(tmp_path):
    ann_file = fixtures.write_coco(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "coco", tmp_path)
    text = str(err.value)
    assert f"{ann_file} annotation 18 (id 18): its category_id 7 is not in 'categories'" in text
    assert f"{ann_file} annotation 19 (id 19): its image_id 999 is not in 'images'" in text
    assert f"{ann_file} annotation 20 (id 20): its bbox [3, 3, -4, 5] is not [x, y, w, h]" in text
    assert "bad_boxes=skip" in text
    with pytest.raises(DatasetError, match=r"has 2 bad record\(s\)"):  # skipping boxes does not skip wrong ids
        read_format(REG, "coco", tmp_path, options={"bad_boxes": "skip"})


# ---- D³ ----------------------------------------------------------------------------------------------------------------


def d3_intra_group(pkl):
    """The d-cube toolkit's intra-group setting, restated: an image is asked its group's ``inner_sent_id``
    (``D3.get_sent_ids(group_ids=...)``), and an annotation's box goes to each of its ``sent_id``."""
    import pickle

    sents, anns, imgs, groups = (pickle.load(open(pkl / f"{n}.pkl", "rb"))  # noqa: SIM115
                                 for n in ("sentences", "annotations", "images", "groups"))
    out = {}
    for img_id, im in imgs.items():
        asked = groups[im["group_id"]]["inner_sent_id"]
        boxes = sorted((sents[s]["raw_sent"], tuple(anns[a]["bbox"])) for a in im["anno_id"] for s in anns[a]["sent_id"]
                       if s in asked)
        out[img_id] = ([sents[s]["raw_sent"] for s in asked], boxes)
    return out


def test_d3_asks_each_image_for_its_groups_descriptions_negatives_included(tmp_path):
    root = fixtures.write_d3(tmp_path)
    result = read_format(REG, "d3", root)
    want = d3_intra_group(root / "d3_pkl")
    for record in result.records:
        img_id = int(record["id"].split("-")[1])
        cats, boxes = want[img_id]
        assert record["categories"] == cats
        got = sorted((o["label"], (o["bbox_2d"][0], o["bbox_2d"][1], o["bbox_2d"][2] - o["bbox_2d"][0],
                                   o["bbox_2d"][3] - o["bbox_2d"][1])) for o in record["solution"])
        assert got == [(label, tuple(float(v) for v in b)) for label, b in boxes]
    assert "horseman without helmet" in result.records[0]["categories"]  # an absence description: a negative
    assert len(result.records[0]["solution"]) == 2  # one box named by two descriptions
    assert len(_ovd(tmp_path, result)) == 3
    pres = read_format(REG, "d3", root, options={"descriptions": "pres"})
    assert "horseman without helmet" not in pres.records[0]["categories"]


def test_every_bad_d3_image_is_named(tmp_path):
    root = fixtures.write_d3(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "d3", root)
    text = str(err.value)
    assert "annotations.pkl annotation 77: is missing" in text
    assert "images.pkl image 4: its group_id 9 is not in groups.pkl" in text
