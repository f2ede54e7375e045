"""Hugging Face ``datasets`` input: a parquet file with embedded images trains like the task's own JSONL."""

from __future__ import annotations

import io

import pytest

from syngrpo.data.hf import is_dataset_source, materialize, parse_hub_source
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from syngrpo.train.trainer import Trainer

datasets = pytest.importorskip("datasets")


@pytest.fixture
def parquet_file(tmp_path):
    """Toy REC samples as a parquet file: images embedded as PNG bytes, columns named like TRL's."""
    from PIL import Image

    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "toy", n=6, seed=0, split="train", image_size=56)
    rows = {"img": [], "question": [], "bbox": []}
    for s in samples:
        buf = io.BytesIO()
        Image.open(s.image).save(buf, format="PNG")
        rows["img"].append({"bytes": buf.getvalue(), "path": None})
        rows["question"].append(s.problem)
        rows["bbox"].append([float(v) for v in s.solution])
    features = datasets.Features({"img": datasets.Image(), "question": datasets.Value("string"),
                                  "bbox": datasets.Sequence(datasets.Value("float32"))})
    path = tmp_path / "rec.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path, samples


def test_a_parquet_file_with_embedded_images_becomes_the_tasks_samples(parquet_file, tmp_path):
    path, originals = parquet_file
    records = materialize(str(path), tmp_path / "out", columns={"image": "img", "problem": "question",
                                                                 "solution": "bbox"})
    loaded = get_registry().create("tasks", "rec").load(records)
    assert [s.problem for s in loaded] == [s.problem for s in originals]
    assert [s.solution for s in loaded] == [s.solution for s in originals]
    from PIL import Image, ImageChops

    for a, b in zip(loaded, originals, strict=True):  # pixels survived the round trip exactly
        assert ImageChops.difference(Image.open(a.image).convert("RGB"), Image.open(b.image).convert("RGB")).getbbox() is None


def test_a_run_trains_from_a_parquet_file(parquet_file, tiny_policy_dir, tmp_path, config_for):
    path, _ = parquet_file
    cfg = config_for(tiny_policy_dir, f"data.train={path}", f"data.eval={path}",
                     "data.columns={image: img, problem: question, solution: bbox}", "optim.max_steps=1")
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
        assert len(trainer.train_samples) == 6
        metrics = trainer.train_step(1)
    assert metrics["reward/format"] >= 0 and (tmp_path / "run" / "data" / "hf" / "train" / "records.jsonl").is_file()


def test_a_column_mapping_that_names_a_missing_column_lists_the_real_ones(parquet_file, tmp_path):
    path, _ = parquet_file
    with pytest.raises(ConfigError, match=r"does not have; its columns: \['img', 'question', 'bbox'\]"):
        materialize(str(path), tmp_path / "out", columns={"image": "picture"})


def test_sources_are_recognised_and_hub_ids_parsed(tmp_path):
    assert is_dataset_source("hf://org/name") and is_dataset_source(str(tmp_path))
    assert is_dataset_source("x.parquet") and not is_dataset_source("x.jsonl") and not is_dataset_source(None)
    assert parse_hub_source("hf://org/name@cfg:test") == ("org/name", "cfg", "test")
    assert parse_hub_source("hf://org/name") == ("org/name", None, "train")
    with pytest.raises(ConfigError):
        parse_hub_source("hf://")


def test_syngrpo_check_reads_a_parquet_source_and_its_column_mapping(parquet_file, tiny_policy_dir, config_for):
    from syngrpo.train.preflight import check_config

    path, _ = parquet_file
    good = config_for(tiny_policy_dir, f"data.train={path}", "data.columns={image: img, problem: question}")
    assert check_config(good).errors == []
    bad = config_for(tiny_policy_dir, f"data.train={path}", "data.columns={image: picture}")
    assert any("does not have" in e for e in check_config(bad).errors)


def test_a_column_of_image_lists_becomes_samples_of_several_images(tmp_path):
    """Several images per sample (issue 27 item 2; TRL's multi-image datasets keep an ``images`` list column):
    each image is written in order, and the REC record's ``box_image`` says which one the box is in."""
    from PIL import Image

    task = get_registry().create("tasks", "rec")
    pairs = task.make_toy_dataset(tmp_path / "toy", n=3, seed=0, split="train", image_size=56, images_per_sample=2)
    rows = {"images": [], "normal_caption": [], "solution": [], "box_image": []}
    for s in pairs:
        encoded = []
        for p in s.images:
            buf = io.BytesIO()
            Image.open(p).save(buf, format="PNG")
            encoded.append({"bytes": buf.getvalue(), "path": None})
        rows["images"].append(encoded)
        rows["normal_caption"].append(s.problem)
        rows["solution"].append([float(v) for v in s.solution])
        rows["box_image"].append(s.box_image)
    features = datasets.Features({"images": datasets.Sequence(datasets.Image()),
                                  "normal_caption": datasets.Value("string"),
                                  "solution": datasets.Sequence(datasets.Value("float32")),
                                  "box_image": datasets.Value("int64")})
    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    from syngrpo.data.hf import image_problems

    assert image_problems(str(path), columns={"image": "images"}) == (3, [])
    records = materialize(str(path), tmp_path / "out", columns={"image": "images"})
    loaded = task.load(records)
    assert [s.num_images for s in loaded] == [2, 2, 2]
    for got, want in zip(loaded, pairs, strict=True):
        assert got.box_image == want.box_image and got.problem == want.problem and got.solution == want.solution
        for a, b in zip(got.images, want.images, strict=True):
            with Image.open(a) as x, Image.open(b) as y:
                assert x.convert("RGB").tobytes() == y.convert("RGB").tobytes()
