"""``syngrpo check`` and the same checks at the start of ``syngrpo train``: bad plugin names, bad options
and bad dataset samples are errors before any model is loaded, naming what is wrong and where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from syngrpo.cli import main
from syngrpo.config import load_train_config
from syngrpo.errors import ConfigError
from syngrpo.train.preflight import check_config


@pytest.fixture
def dataset(tmp_path):
    """A REC JSONL file of 5 records: one good, then a missing image, a corrupt one, a box outside, an empty box."""
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png body")
    rows = [
        {"image": "good.png", "solution": [4, 4, 30, 30], "normal_caption": "the red square"},
        {"image": "missing.png", "solution": [4, 4, 30, 30], "normal_caption": "x", "width": 64, "height": 64},
        {"image": "corrupt.png", "solution": [4, 4, 30, 30], "normal_caption": "x", "width": 64, "height": 64},
        {"image": "good.png", "solution": [40, 40, 90, 60], "normal_caption": "outside"},
        {"image": "good.png", "solution": [10, 10, 10, 30], "normal_caption": "empty"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(tmp_path, *extra: str) -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  policy: /nonexistent/policy\ndata:\n  task: rec\nsynthesis:\n  mode: off\n")
    return str(cfg)


def test_check_names_every_bad_sample_by_file_and_line(tmp_path, dataset, capsys):
    code = main(["check", "-c", _config(tmp_path), "--set", f"data.train={dataset}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{dataset} line 2: image " in err and "missing.png does not exist" in err
    assert f"{dataset} line 3: image " in err and "cannot be decoded" in err
    assert f"{dataset} line 4: box [40.0, 40.0, 90.0, 60.0] lies outside the 64x64 image" in err
    assert f"{dataset} line 5: box [10.0, 10.0, 10.0, 30.0] is inverted or empty" in err
    assert "4 bad sample(s) of 5" in err and "data.bad_samples: drop" in err
    assert f"{dataset} line 1" not in err


def test_bad_samples_can_be_dropped_and_counted_instead(tmp_path, dataset, capsys):
    code = main(["check", "-c", _config(tmp_path), "--set", f"data.train={dataset}", "--set", "data.bad_samples=drop"])
    out = capsys.readouterr().out
    assert code == 0 and "dropped 4 of 5 samples" in out
    cfg = load_train_config(_config(tmp_path), [f"data.train={dataset}", "data.bad_samples=drop"])
    report = check_config(cfg)
    from syngrpo.plugins import get_registry

    samples = get_registry().create("tasks", "rec").load(dataset)
    kept = report.keep(samples, "train")
    assert [s.problem for s in kept] == ["the red square"]


@pytest.mark.parametrize(("override", "needle"), [
    ("rewards.terms=[{name: acuracy}]", "rewards.terms[0]"),
    ("rollout.engine=hff", "rollout.engine"),
    ("rollout.engine_options={temprature: 0.5}", "unknown option(s) ['temprature']"),
    ("algorithm.advantage.name=grpo_typo", "algorithm.advantage"),
    ("synthesis.transport_options={retrys: 2}", "unknown option(s) ['retrys']"),
])
def test_unknown_plugins_and_options_are_errors(tmp_path, override, needle):
    extra = ["synthesis.mode=async", "synthesis.servers=[http://127.0.0.1:9]"] if "transport" in override else []
    cfg = load_train_config(_config(tmp_path), [override, *extra])
    report = check_config(cfg)
    assert any(needle in e for e in report.errors), report.errors


def test_the_spawned_servers_synthesizer_and_the_job_options_are_checked(tmp_path):
    cfg = load_train_config(_config(tmp_path), ["synthesis.mode=async", "synthesis.spawn_server=true",
                                                "synthesis.job_options={distractorz: 2}"])
    errors = check_config(cfg).errors
    assert any("synthesis.job_options" in e and "distractorz" in e for e in errors), errors
    cfg = load_train_config(_config(tmp_path), ["synthesis.mode=async", "synthesis.spawn_server=true",
                                                "synthesis.server={synthesizer: procedurall}"])
    assert any("synthesizer" in e and "procedurall" in e for e in check_config(cfg).errors)
    cfg = load_train_config(_config(tmp_path), ["synthesis.mode=async", "synthesis.spawn_server=true",
                                                "synthesis.job_options={distractors: 3}"])
    assert check_config(cfg).errors == []


def test_train_runs_the_checks_before_loading_any_model(tmp_path):
    from syngrpo.train.trainer import Trainer

    cfg = load_train_config(_config(tmp_path), ["rewards.terms=[{name: acuracy}]"])
    trainer = Trainer(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"rewards.terms\[0\].*acuracy"):
        trainer.setup()  # the policy path does not exist: had it loaded first, the error would be about that


PAPER_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("table1/*.yaml")) + sorted(
    (Path(__file__).resolve().parents[1] / "configs").glob("*_qwen2_5_vl_*.yaml"))


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_paper_config_passes_its_checks_without_its_datasets(path):
    """Every Table 1 method and paper config: config, plugin names and options resolve (`syngrpo check --no-data`)."""
    from syngrpo.config import load_train_config
    from syngrpo.train.preflight import check_config

    report = check_config(load_train_config(path), data=False)
    assert report.errors == [], report.errors


def test_check_without_a_config_checks_the_quickstart_as_train_and_plan_do(capsys):
    """`syngrpo check` required -c while `syngrpo train` and `syngrpo plan` default to the quickstart (issue #25)."""
    assert main(["check", "--no-data"]) == 0
    assert "syngrpo: the quickstart passes every check" in capsys.readouterr().out
