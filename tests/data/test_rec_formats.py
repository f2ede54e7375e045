"""REC dataset formats: the refer API's RefCOCO pickles, VLM-R1's files and LISA's ReasonSeg, read as the sources
document them, with every bad record named (file, record number, fix)."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from syngrpo.data.formats import DatasetError, make_format, read_format, write_converted
from syngrpo.data.pickles import load_plain_pickle
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from tests.data import fixtures

REG = get_registry()


def _rec(tmp_path, records, name="out.jsonl"):
    from syngrpo.data.formats import FormatResult

    path = write_converted(FormatResult(records), tmp_path / name)
    return REG.create("tasks", "rec").load(path)


# ---- refer ---------------------------------------------------------------------------------------------------------


def refer_split(refs, split):
    """The refer API's ``getRefIds(split=...)`` rule, restated from its refer.py."""
    if split in ("testA", "testB", "testC"):
        return [r for r in refs if split[-1] in r["split"]]
    if split == "test":
        return [r for r in refs if "test" in r["split"]]
    return [r for r in refs if r["split"] == split]


def test_refer_reads_one_record_per_expression_with_coco_boxes_as_corners(tmp_path):
    folder = fixtures.write_refer(tmp_path / "refer" / "data")
    refs = pickle.load(open(folder / "refs(unc).p", "rb"), encoding="utf-8")  # noqa: SIM115 - the API's own read
    instances = json.loads((folder / "instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    result = read_format(REG, "refcoco", tmp_path / "refer" / "data", split="val")
    want = [(s["sent"], anns[r["ann_id"]]["bbox"]) for r in refer_split(refs, "val") for s in r["sentences"]]
    assert [(r["normal_caption"], r["solution"]) for r in result.records] == [
        (text, [x, y, x + w, y + h]) for text, (x, y, w, h) in want]
    assert "caf\u00e9 dog" in [r["normal_caption"] for r in result.records]  # a Python 2 byte string, decoded
    assert all(os.path.isfile(r["image"]) for r in result.records)
    samples = _rec(tmp_path, result.records)
    assert samples[0].problem == "woman in red" and samples[0].solution == [10.0, 10.0, 38.0, 38.0]
    assert samples[0].meta["source_record"].endswith("refs(unc).p ref 3 (ref_id 3) sentence 1")


@pytest.mark.parametrize("split", ["train", "val", "testA", "testB", "test"])
def test_refer_splits_follow_the_apis_rule(tmp_path, split):
    folder = fixtures.write_refer(tmp_path)
    refs = pickle.load(open(folder / "refs(unc).p", "rb"), encoding="utf-8")  # noqa: SIM115
    result = read_format(REG, "refer", folder, split=split)
    assert sorted({r["ref_id"] for r in result.records}) == sorted(r["ref_id"] for r in refer_split(refs, split))
    assert make_format(REG, "refcoco").splits(folder) == ["train", "val", "testA", "testB"]


def test_every_bad_ref_is_named_with_its_number_and_a_fix(tmp_path):
    fixtures.write_refer(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "refcoco", tmp_path, split="val")
    text = str(err.value)
    assert "has 3 bad record(s)" in text
    assert "refs(unc).p ref 8 (ref_id 8): its ann_id 999 is not in" in text and "same refcoco.zip" in text
    assert "refs(unc).p ref 9 (ref_id 9): annotation 108 has the empty box" in text
    assert "refs(unc).p ref 10 (ref_id 10): has no sentences; a REC record needs an expression" in text


def test_a_pickle_that_names_a_class_is_refused_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(ConfigError, match=r"names the class posix.system|names the class os.system"):
        load_plain_pickle(path)


def test_a_missing_image_folder_says_where_refer_puts_it(tmp_path):
    folder = fixtures.write_refer(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "images")
    with pytest.raises(ConfigError, match=r"images/mscoco/images/train2014.*--image-root"):
        read_format(REG, "refcoco", folder, split="val")


# ---- VLM-R1's files --------------------------------------------------------------------------------------------------


def test_vlmr1_json_list_with_bare_file_names_reads_with_its_image_folder(tmp_path):
    listing, jsonl, images = fixtures.write_vlmr1_rec(tmp_path)
    result = read_format(REG, "vlmr1_rec", listing, image_root=images)
    assert [r["solution"] for r in result.records] == [[4.0, 6.0, 24.0, 36.0], [10.5, 10.0, 38.0, 38.25],
                                                       [0.0, 0.0, 28.0, 28.0]]
    assert all(os.path.isfile(r["image"]) for r in result.records)
    samples = _rec(tmp_path, result.records)
    assert samples[1].problem == "object number 1" and samples[1].meta["problem"].startswith("Please provide")
    assert samples[1].meta["normalized_solution"] == [187, 178, 678, 683]  # VLM-R1's extra fields travel along


def test_vlmr1_jsonl_with_image_lists_conversations_and_string_boxes(tmp_path):
    _, jsonl, images = fixtures.write_vlmr1_rec(tmp_path)
    result = read_format(REG, "vlmr1_rec", jsonl, image_root=images)
    assert [r["solution"] for r in result.records] == [[4.0, 6.0, 24.0, 36.0], [10.0, 10.0, 38.0, 38.0]]
    assert result.records[0]["problem"].startswith("Please provide the bounding box") and \
        "<image>" not in result.records[0]["problem"]
    assert result.records[1]["image"].endswith("COCO_train2014_000000000001.jpg")  # [[name]]: a nested list


def test_every_bad_vlmr1_record_is_named_with_its_record_number(tmp_path):
    listing, jsonl, images = fixtures.write_vlmr1_rec(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "vlmr1_rec", listing, image_root=images)
    text = str(err.value)
    assert f"{listing} record 4: there is no 'solution'" in text and "'solution': [x1, y1, x2, y2]" in text
    assert f"{listing} record 5: 'solution' is empty" in text
    assert f"{listing} record 6: the box [30.0, 30.0, 10.0, 10.0] is empty or inverted" in text
    with pytest.raises(DatasetError) as err:
        read_format(REG, "vlmr1_rec", jsonl, image_root=images)
    text = str(err.value)
    assert f"{jsonl} line 3: 'image' lists 2 images; a REC record has one image" in text
    assert f"{jsonl} line 4: the box '<answer>somewhere</answer>' is not four numbers" in text


def test_the_rec_task_names_the_record_whose_image_is_not_under_the_image_root(tmp_path):
    """The issue's report: a JSON list with bare file names failed with no record number."""
    listing, _, images = fixtures.write_vlmr1_rec(tmp_path)
    records = json.loads(listing.read_text())
    for r in records:
        r.pop("width"), r.pop("height")
    listing.write_text(json.dumps(records))
    with pytest.raises(ValueError) as err:
        REG.create("tasks", "rec").load(listing)  # no image_root: the paths start at the file's folder
    text = str(err.value)
    assert f"{listing} record 1: image " in text and f"{listing} record 3: image " in text
    assert "set it to the folder the paths start from" in text
    assert len(REG.create("tasks", "rec").load(listing, image_root=images)) == 3


# ---- LISA's ReasonSeg -------------------------------------------------------------------------------------------------


def test_reasonseg_gives_the_box_of_the_target_polygons_one_record_per_instruction(tmp_path):
    root = fixtures.write_reasonseg(tmp_path)
    result = read_format(REG, "lisa", root, split="test")
    first = [r for r in result.records if "img_1" in r["id"]]
    # both target polygons; the ignore and flag shapes are not the target (LISA's data_processing.py)
    assert [r["solution"] for r in first] == [[10.0, 5.0, 44.0, 40.0]] * 2
    assert [r["problem"] for r in first] == ["What can keep the food cold?", "Which object stores milk?"]
    (second,) = [r for r in result.records if "img_2" in r["id"]]
    assert second["normal_caption"] == "the caf\u00e9 sign"  # a cp1252 file, a short phrase: an expression
    assert len(_rec(tmp_path, result.records)) == 3


def test_a_reasonseg_image_without_a_target_is_named(tmp_path):
    root = fixtures.write_reasonseg(tmp_path, bad=True)
    with pytest.raises(DatasetError, match=r"img_3.json: has no 'target' polygon with an area"):
        read_format(REG, "lisa", root, split="test")
