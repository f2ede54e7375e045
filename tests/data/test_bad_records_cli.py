"""Every bad record of a downloaded copy read in place (``data.format``) is named by ``syngrpo check`` and by
``syngrpo train`` with its file, record number and fix, all at once, and before any model loads: ``train`` is
given a policy directory that does not exist, so a run that got as far as loading a model would fail on the
model instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.data import fixtures


def _refer(tmp_path):
    root = tmp_path / "refer"
    fixtures.write_refer(root, bad=True)
    return {"task": "rec", "format": "refcoco", "train": str(root), "format_options": {"split": "val"}}, [
        "refs(unc).p ref 8 (ref_id 8): its ann_id 999 is not in", "refs(unc).p ref 9 (ref_id 9)",
        "refs(unc).p ref 10 (ref_id 10): has no sentences"]


def _vlmr1_rec(tmp_path):
    listing, _, images = fixtures.write_vlmr1_rec(tmp_path, bad=True)
    return {"task": "rec", "format": "vlmr1_rec", "train": str(listing), "image_root": str(images)}, [
        f"{listing} record 4: there is no 'solution'", f"{listing} record 5: 'solution' is empty",
        f"{listing} record 6: the box [30.0, 30.0, 10.0, 10.0] is empty or inverted"]


def _vlmr1_ovd(tmp_path):
    path, images = fixtures.write_vlmr1_ovd(tmp_path, bad=True)
    return {"task": "ovd", "format": "vlmr1_ovd", "train": str(path), "image_root": str(images)}, [
        f"{path} line 3: the answer", f"{path} line 4: the answer labels ['a cat']", f"{path} line 5: no answer"]


def _coco(tmp_path):
    ann = fixtures.write_coco(tmp_path / "coco", bad=True)
    return {"task": "ovd", "format": "coco", "train": str(tmp_path / "coco"), "format_options": {"split": "val2017"}}, [
        f"{ann} annotation 18 (id 18): its category_id 7", f"{ann} annotation 19 (id 19): its image_id 999",
        f"{ann} annotation 20 (id 20): its bbox [3, 3, -4, 5] is not [x, y, w, h]"]


def _d3(tmp_path):
    root = fixtures.write_d3(tmp_path / "d3", bad=True)
    return {"task": "ovd", "format": "d3", "train": str(root)}, [
        "annotations.pkl annotation 77: is missing", "images.pkl image 4: its group_id 9 is not in groups.pkl"]


def _3dfront(tmp_path):
    scenes = fixtures.write_3dfront(tmp_path / "front", bad=True)
    return {"task": "isr", "format": "3dfront", "train": str(scenes)}, [
        "room 1 (Bedroom-3921) child 5 (jid sofa-404): model_info.json has no entry for it",
        "room 1 (Bedroom-3921) child 6 (jid chair-1): has an unreadable pose"]


def _lisa(tmp_path):
    root = fixtures.write_reasonseg(tmp_path, bad=True)
    return {"task": "rec", "format": "lisa", "train": str(root), "format_options": {"split": "test"}}, [
        "img_3.json: has no 'target' polygon with an area"]


SOURCES = {"lisa": _lisa, "refcoco": _refer, "vlmr1_rec": _vlmr1_rec, "vlmr1_ovd": _vlmr1_ovd, "coco": _coco, "d3": _d3,
           "3dfront": _3dfront}


def _config(tmp_path: Path, policy: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"policy": str(policy), "device": "cpu", "dtype": "float32"}, "data": data,
        "rollout": {"engine": "hf", "num_generations": 2, "max_new_tokens": 8},
        "optim": {"batch_size": 2, "max_steps": 1}, "synthesis": {"mode": "off"},
        "logging": {"progress": False, "tensorboard": False, "plots": False}, "eval": {"at_end": False}}))
    return path


@pytest.mark.parametrize("name", SOURCES)
def test_check_and_train_name_every_bad_record_before_a_model_loads(name, tmp_path, cli):
    data, expected = SOURCES[name](tmp_path)
    config = _config(tmp_path, tmp_path / "no-such-policy", data)
    code, out, err = cli("check", "-c", config)
    assert code != 0, out
    missing = [e for e in expected if e not in out + err]
    assert not missing, f"syngrpo check did not name {missing}:\n{out}\n{err}"
    code, out, err = cli("train", "-c", config, "--out", tmp_path / "run")
    assert code == 2, out + err
    missing = [e for e in expected if e not in err]
    assert not missing, f"syngrpo train did not name {missing} (did it load the model first?):\n{err}"
    assert "no-such-policy" not in err


def test_a_copy_with_other_splits_says_how_a_config_names_one(tmp_path, cli):
    fixtures.write_coco(tmp_path / "coco")  # instances_val2017.json only; data.train asks for split train
    config = _config(tmp_path, tmp_path / "no-such-policy", {"task": "ovd", "format": "coco",
                                                            "train": str(tmp_path / "coco")})
    code, out, err = cli("check", "-c", config)
    assert code != 0 and "no instances_train.json; instances files here: val2017" in err
    assert "data.format_options: {split: NAME}" in err
