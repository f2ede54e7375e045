"""A Hugging Face dataset whose ``Image`` column holds paths only: ``data.image_root`` is where they start, and a
missing image is named by ``syngrpo check`` (row number and fix) before any model loads, not a raw traceback mid-run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.data import fixtures

datasets = pytest.importorskip("datasets")


def path_only_parquet(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/ds/rec.parquet`` whose ``img`` column is a ``datasets.Image`` holding paths relative to ``tmp/pics``."""
    pics = tmp_path / "pics"
    rows = {"img": [], "question": [], "bbox": []}
    for i, box in enumerate(([4, 6, 24, 36], [10, 10, 38, 38], [20, 4, 50, 30])):
        fixtures.image(pics / "imgs" / f"{i}.png", box=box)
        rows["img"].append({"bytes": None, "path": f"imgs/{i}.png"})
        rows["question"].append(f"object {i}")
        rows["bbox"].append([float(v) for v in box])
    features = datasets.Features({"img": datasets.Image(), "question": datasets.Value("string"),
                                  "bbox": datasets.Sequence(datasets.Value("float32"))})
    path = tmp_path / "ds" / "rec.parquet"
    path.parent.mkdir()
    here = Path.cwd()
    os.chdir(pics)  # datasets sizes path-only images when writing, from the working directory
    try:
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    finally:
        os.chdir(here)
    return path, pics


def write_config(tmp_path: Path, policy: Path, **data) -> Path:
    cfg = {"model": {"policy": str(policy), "device": "cpu", "dtype": "float32"},
           "data": {"task": "rec", "columns": {"image": "img", "problem": "question", "solution": "bbox"}, **data},
           "rollout": {"engine": "hf", "num_generations": 2, "max_new_tokens": 8},
           "optim": {"batch_size": 2, "max_steps": 2, "lr": 1e-3}, "synthesis": {"mode": "off"},
           "logging": {"progress": False, "tensorboard": False, "plots": False}, "eval": {"at_end": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_names_each_row_whose_path_only_image_is_missing(tmp_path, tiny_policy_dir, cli):
    parquet, pics = path_only_parquet(tmp_path)
    config = write_config(tmp_path, tiny_policy_dir, train=str(parquet), eval=str(parquet))
    code, out, err = cli("check", "-c", config)  # no image_root: the paths start at the parquet file's folder
    assert code == 2
    for i in range(3):
        assert f"{parquet} row {i} (ds[{i}]): image 'imgs/{i}.png' does not exist (looked in {parquet.parent})" in err
    assert "set data.image_root to the folder the image paths start from" in err
    code, out, err = cli("check", "-c", config, "--set", f"data.image_root={pics}")
    assert code == 0, err
    assert "every path-only image found" in out


def test_a_run_trains_from_path_only_images_under_the_image_root(tmp_path, tiny_policy_dir, cli):
    parquet, pics = path_only_parquet(tmp_path)
    config = write_config(tmp_path, tiny_policy_dir, train=str(parquet), eval=str(parquet), image_root=str(pics))
    code, out, err = cli("train", "-c", config, "--out", tmp_path / "run")
    assert code == 0, err
    records = (tmp_path / "run" / "data" / "hf" / "train" / "records.jsonl").read_text()
    assert str(pics / "imgs" / "0.png") in records  # resolved against the image root, written absolute
