"""``data.bad_samples: drop`` in a real run: the trainer starts on exactly the good records and its
``train.log`` names each record it left out, with a total (issue #24: the whole dataset was refused)."""

from __future__ import annotations

import json

from PIL import Image

from syngrpo.train.trainer import Trainer


def test_a_run_with_drop_trains_on_the_good_records_and_its_log_names_the_dropped_ones(tmp_path, tiny_policy_dir,
                                                                                       config_for, registry):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "good.png")
    rows = [
        {"image": "good.png", "solution": [4, 4, 30, 30], "normal_caption": "the red square"},
        {"image": "missing.png", "solution": [4, 4, 30, 30], "normal_caption": "a missing image"},
        {"image": "good.png", "solution": [float("nan"), 4, 30, 30], "normal_caption": "a NaN box"},
        {"image": "good.png", "solution": [8, 8, 40, 40], "normal_caption": "the red square again"},
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = config_for(tiny_policy_dir, f"data.train={data}", "data.bad_samples=drop", "sft.enabled=false",
                     "eval.at_start=false")
    run = tmp_path / "run"
    with Trainer(cfg, run, registry=registry) as t:
        t.setup()
        assert [s.problem for s in t.train_samples] == ["the red square", "the red square again"]
    log = (run / "train.log").read_text()
    assert f"dropped {data} line 2: image" in log and "missing.png does not exist" in log
    assert f"dropped {data} line 3: " in log and "no readable box" in log
    assert "dropped 2 of 4 samples" in log
