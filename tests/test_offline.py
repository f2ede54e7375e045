"""Offline generation end to end: describe, synthesize through the real in-process data server, write a
dataset file that plain GRPO reads (originals + synthesized, labels kept pixel-exact)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from syngrpo.config import TrainConfig, load_train_config
from syngrpo.config.io import load_config
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from syngrpo.train.data import load_split
from syngrpo.train.offline import run_offline

SETS = ["data.task=rec", "data.toy.n_train=3", "data.toy.image_size=56", "synthesis.mode=off",
        "synthesis.transport=inprocess",
        "synthesis.transport_options={synthesizer: procedural, segmenter: box, workers: 1}",
        "offline.describer=template", "offline.timeout_s=60"]


def test_offline_run_writes_originals_and_synthesized_samples_the_trainer_reads(tmp_path):
    cfg = load_config(TrainConfig, None, SETS)
    out = tmp_path / "offline"
    report = run_offline(cfg, out, variants=2, say=lambda _: None)
    assert (report.originals, report.descriptions, report.submitted, report.done) == (3, 6, 6, 6)
    assert report.failed == report.unfinished == report.missing_descriptions == 0
    assert json.loads((out / "offline.json").read_text())["done"] == 6

    # plain GRPO on the result: a config whose data.train is the file
    train_cfg = load_train_config(None, ["data.task=rec", f"data.train={out / 'train.jsonl'}", "synthesis.mode=off"])
    task = get_registry().create("tasks", "rec")
    samples = load_split(train_cfg, task, "train", tmp_path / "run")
    originals = [s for s in samples if s.generation == 0]
    synthesized = [s for s in samples if s.generation == 1]
    assert len(originals) == 3 and len(synthesized) == 6 and len({s.id for s in samples}) == 9
    by_id = {s.id: s for s in originals}
    describer = get_registry().create("describers", "template")
    for s in synthesized:
        base = by_id[s.source_id]
        assert s.solution == base.solution and s.problem == base.problem
        assert s.description in describer.describe([_request(base, task)])[0]
        new, old = np.asarray(Image.open(s.image).convert("RGB")), np.asarray(Image.open(base.image).convert("RGB"))
        x1, y1, x2, y2 = (int(v) for v in base.solution)
        assert np.array_equal(new[y1:y2, x1:x2], old[y1:y2, x1:x2])  # the labelled object is untouched
        assert not np.array_equal(new, old)  # and the rest was repainted


def _request(sample, task):
    from syngrpo.synthesis.describers import DescribeRequest

    return DescribeRequest(image=None, question="", labels=task.foreground_labels(sample), n=2, seed=0,
                           sample_id=sample.id)


def test_offline_needs_a_data_server_and_a_known_describer_before_any_work(tmp_path):
    no_server = load_config(TrainConfig, None, [s for s in SETS if not s.startswith("synthesis.transport")])
    with pytest.raises(ConfigError, match="offline generation sends its jobs to a data server"):
        run_offline(no_server, tmp_path / "a", say=lambda _: None)
    unknown = load_config(TrainConfig, None, [*SETS, "offline.describer=gpt5"])
    with pytest.raises(Exception, match="no describer named 'gpt5'"):
        run_offline(unknown, tmp_path / "b", say=lambda _: None)


def test_the_cli_offline_help_and_refusals():
    help_text = subprocess.run([sys.executable, "-m", "syngrpo.cli", "synth", "--offline", "--help"],
                               capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--variants K" in help_text.stdout and "--offline" in help_text.stdout
    bad = subprocess.run([sys.executable, "-m", "syngrpo.cli", "synth", "--offline", "--out", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "needs -c CONFIG" in bad.stderr


def test_offline_generation_works_for_isr_refine_whose_jobs_carry_the_layouts_labels(tmp_path):
    sets = [s for s in SETS if not s.startswith("data.task")] + ["data.task=isr_refine", "data.toy.image_size=112"]
    cfg = load_config(TrainConfig, None, sets)
    report = run_offline(cfg, tmp_path / "refine", variants=1, say=lambda _: None)
    assert (report.submitted, report.done, report.failed) == (3, 3, 0), report.errors
    task = get_registry().create("tasks", "isr_refine")
    samples = task.load(tmp_path / "refine" / "train.jsonl")
    new = [s for s in samples if s.generation == 1]
    assert len(new) == 3 and all(s.meta["layout"] == next(o for o in samples if o.id == s.source_id).meta["layout"]
                                 for s in new)
    assert all(task.foreground_labels(s) == [o["label"] for o in s.meta["layout"]] for s in new)
