"""Each format the field ships goes the whole way on CPU with the tiny policy, through the command line only:
``syngrpo data convert`` (or ``prepare``, or ``data.format`` in place) -> ``syngrpo check`` -> a 2-step
``syngrpo train`` -> ``syngrpo eval --benchmark``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.data import fixtures


def write_config(tmp_path: Path, policy: Path, task: str, data: dict, **sections) -> Path:
    cfg = {"model": {"policy": str(policy), "device": "cpu", "dtype": "float32"},
           "data": {"task": task, **data},
           "rollout": {"engine": "hf", "num_generations": 2, "max_new_tokens": 8},
           "optim": {"batch_size": 2, "max_steps": 2, "lr": 1e-3}, "synthesis": {"mode": "off"},
           "logging": {"progress": False, "tensorboard": False, "plots": False}, "eval": {"at_end": False},
           **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_train_eval(cli, tmp_path: Path, config: Path, benchmark: str, *eval_args) -> dict:
    code, out, err = cli("check", "-c", config)
    assert code == 0, err
    assert "every image, box and text ok" in out or "every path-only image found" in out
    code, out, err = cli("train", "-c", config, "--out", tmp_path / "run")
    assert code == 0, err
    code, out, err = cli("eval", "--checkpoint", tmp_path / "run", "--benchmark", benchmark, *eval_args,
                         "--max-samples", "2", "--max-new-tokens", "24", "--out", tmp_path / "eval", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / f"{benchmark}.predictions.json").read_text())
    assert report["limited"] is True
    assert len(report["results"]) == min(2, report["split_size"]) and (tmp_path / "eval" / "benchmarks.md").is_file()
    return report


def test_a_vlmr1_rec_json_list(tmp_path, tiny_policy_dir, cli):
    listing, _, images = fixtures.write_vlmr1_rec(tmp_path)
    code, out, err = cli("data", "convert", "--from", "vlmr1_rec", listing, "--out", tmp_path / "conv",
                         "--image-root", images)
    assert code == 0, err
    conv = tmp_path / "conv" / "records.jsonl"
    config = write_config(tmp_path, tiny_policy_dir, "rec", {"train": str(conv), "eval": str(conv)})
    check_train_eval(cli, tmp_path, config, "refcoco_val", "--split", conv)


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_vlmr1_ovd_jsonl(tmp_path, tiny_policy_dir, cli):
    path, images = fixtures.write_vlmr1_ovd(tmp_path)
    assert cli("data", "convert", "--from", "vlmr1_ovd", path, "--out", tmp_path / "conv", "--image-root", images)[0] == 0
    conv = tmp_path / "conv" / "records.jsonl"
    config = write_config(tmp_path, tiny_policy_dir, "ovd", {"train": str(conv), "eval": str(conv),
                                                             "task_options": {"profile": "vlmr1"}})
    check_train_eval(cli, tmp_path, config, "d3", "--split", conv)


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_coco_instances_file_read_in_place_as_coco_filter(tmp_path, tiny_policy_dir, cli):
    fixtures.write_coco(tmp_path / "coco")
    code, out, err = cli("data", "prepare", "coco_filter", "--from", tmp_path / "coco", "--out", tmp_path / "data")
    assert code == 0, err
    assert "coco_filter/val2017: 3 records" in out and "COCO_filter:" in out
    config = write_config(tmp_path, tiny_policy_dir, "ovd", {
        "train": str(tmp_path / "coco"), "eval": str(tmp_path / "coco"), "format": "coco_filter",
        "format_options": {"split": "val2017"}, "task_options": {"profile": "vlmr1"}})
    check_train_eval(cli, tmp_path, config, "coco_filter", "--data", tmp_path / "data")
    assert (tmp_path / "run" / "data" / "formats" / "train" / "records.jsonl").is_file()


def test_a_refer_refcoco_pair_read_in_place(tmp_path, tiny_policy_dir, cli):
    fixtures.write_refer(tmp_path / "refer" / "data")
    code, out, err = cli("data", "prepare", "refcoco", "--from", tmp_path / "refer" / "data", "--out", tmp_path / "data")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "data" / "refcoco").glob("*.jsonl")) == [
        "testA.jsonl", "testB.jsonl", "train.jsonl", "val.jsonl"]
    config = write_config(tmp_path, tiny_policy_dir, "rec", {
        "train": str(tmp_path / "refer" / "data"), "eval": str(tmp_path / "refer" / "data"), "format": "refcoco",
        "task_options": {"profile": "vlmr1"}})  # train reads split train, eval split val
    check_train_eval(cli, tmp_path, config, "refcoco_val", "--data", tmp_path / "data")


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_d3_copy_read_in_place(tmp_path, tiny_policy_dir, cli):
    root = fixtures.write_d3(tmp_path / "d3")
    assert cli("data", "prepare", "d3", "--from", root, "--out", tmp_path / "data")[0] == 0
    config = write_config(tmp_path, tiny_policy_dir, "ovd", {"train": str(root), "eval": str(root), "format": "d3",
                                                             "task_options": {"profile": "vlmr1"}})
    check_train_eval(cli, tmp_path, config, "d3", "--data", tmp_path / "data")


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_3dfront_scene_set_with_schematic_top_views(tmp_path, tiny_policy_dir, cli):
    scenes = fixtures.write_3dfront(tmp_path / "front")
    code, out, err = cli("data", "prepare", "3dfront", "--from", scenes, "--out", tmp_path / "data",
                         "--option", "image_size=112")
    assert code == 0, err
    config = write_config(tmp_path, tiny_policy_dir, "isr", {
        "train": str(scenes), "eval": str(tmp_path / "data" / "3dfront" / "all.jsonl"), "format": "3dfront",
        "eval_format": "none", "format_options": {"image_size": 112}, "task_options": {"drop_unknown_labels": True}},
        optim={"batch_size": 1, "max_steps": 2, "lr": 1e-3})
    report = check_train_eval(cli, tmp_path, config, "3dfront_isr", "--data", tmp_path / "data")
    assert report["task_options"] == {"drop_unknown_labels": True}


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_reasonseg_copy_as_lisa_grounding(tmp_path, tiny_policy_dir, cli):
    root = fixtures.write_reasonseg(tmp_path)
    assert cli("data", "prepare", "lisa", "--from", root, "--out", tmp_path / "data")[0] == 0
    prepared = tmp_path / "data" / "lisa" / "test.jsonl"
    config = write_config(tmp_path, tiny_policy_dir, "rec", {"train": str(prepared), "eval": str(prepared)})
    check_train_eval(cli, tmp_path, config, "lisa_test", "--data", tmp_path / "data")


@pytest.mark.slow  # ~30 s each; the default suite keeps the REC JSON and refer cases, CI step 1e runs all
def test_a_parquet_dataset_with_path_only_images(tmp_path, tiny_policy_dir, cli):
    pytest.importorskip("datasets")
    from tests.data.test_hf_paths import path_only_parquet

    parquet, pics = path_only_parquet(tmp_path)
    code, out, err = cli("data", "convert", "--from", "hf", parquet, "--out", tmp_path / "conv", "--image-root", pics,
                         "--option", "columns={image: img, problem: question, solution: bbox}")
    assert code == 0, err
    conv = tmp_path / "conv" / "records.jsonl"
    config = write_config(tmp_path, tiny_policy_dir, "rec", {
        "train": str(parquet), "eval": str(parquet), "image_root": str(pics),
        "columns": {"image": "img", "problem": "question", "solution": "bbox"}})
    check_train_eval(cli, tmp_path, config, "refcoco_val", "--split", conv)
