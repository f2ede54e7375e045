"""A run stopped after step k and resumed continues exactly as the uninterrupted run does."""

from __future__ import annotations

import json

import pytest

from syngrpo.rundir.checkpoint import latest_checkpoint, load_state
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.trainer import Trainer

#: wall-clock numbers differ between any two runs; everything else must not
VOLATILE = ("time/", "synthesis/wait_seconds")


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(VOLATILE)}


@pytest.fixture
def resume_config(sft_policy_dir, config_for):
    # sync synthesis in-process: images come back within the step, so the pool evolves deterministically
    return config_for(sft_policy_dir, "synthesis.transport=inprocess", "optim.max_steps=4", "logging.save_every=2",
                      "optim.batch_size=3", "data.toy.n_train=5", "rollout.max_new_tokens=80",
                      "rollout.temperature=0.8", "optim.lr=1e-4", "optim.schedule=cosine", mode="sync")


def test_resumed_run_matches_the_uninterrupted_one(resume_config, tmp_path, registry):
    with Trainer(resume_config, tmp_path / "straight", registry=registry) as t:
        t.train()
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")

    with Trainer(resume_config, tmp_path / "stopped", registry=registry) as t:
        t.train(until=3)  # a checkpoint at step 2, then one more step that the resume must redo
    with Trainer(resume_config, tmp_path / "stopped", resume=tmp_path / "stopped", registry=registry) as t:
        assert t.step == 0
        t.setup()
        assert t.step == 2
        t.train()
    resumed = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")

    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # step 3 of the first attempt was dropped, then redone
    # the comparison means something only if synthesized samples took part
    assert straight[-1]["synthesis/done_total"] > 0
    assert any(r["batch/synthesized_frac"] > 0 for r in straight[2:])
    assert any(r["diversity/v_mean"] > 0 for r in straight[2:])  # the smoother's state matters after the resume
    for a, b in zip(straight, resumed, strict=True):
        assert _comparable(a) == pytest.approx(_comparable(b), rel=1e-6, abs=1e-7), f"step {a['step']}"


def test_checkpoint_holds_pool_smoother_optimizer_and_rng(resume_config, tmp_path, registry):
    with Trainer(resume_config, tmp_path, registry=registry) as t:
        t.train(until=2)
    state, blob = load_state(latest_checkpoint(tmp_path))
    assert state["step"] == 2
    assert state["smoother"]["step"] == 2 and state["smoother"]["global_avg"] is not None
    assert state["pool"]["position"] == 6 % 5 and state["pool"]["epoch"] == 1
    assert state["pool"]["replaced"], "synthesized samples are part of the checkpoint"
    assert blob["optimizer"]["state"] and blob["scheduler"]["last_epoch"] == 2
    assert set(blob["rng"]) >= {"python", "numpy", "torch"}
    json.dumps(state)  # all JSON


def test_resume_without_a_checkpoint_is_a_clear_error(resume_config, tmp_path, registry):
    from syngrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint"):
        Trainer(resume_config, tmp_path, resume=tmp_path, registry=registry).setup()


def test_train_command_resumes_a_run_in_its_own_directory(tiny_policy_dir, tmp_path, overrides_for):
    from syngrpo.cli import main

    run = tmp_path / "run"
    argv = ["train", "--out", str(run)]
    # without -c the quickstart is the base: switch off its SFT stage and first evaluation
    for item in overrides_for(tiny_policy_dir, "optim.max_steps=2", "logging.save_every=1", "sft.enabled=false",
                              "eval.at_start=false"):
        argv += ["--set", item]
    assert main(argv) == 0
    assert main(["train", "--resume", str(run), "--set", "optim.max_steps=3"]) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert latest_checkpoint(run).name == "step-000003"
    assert "resumed from" in (run / "train.log").read_text()


def test_train_command_names_a_misspelt_key(tmp_path, capsys):
    from syngrpo.cli import main

    assert main(["train", "--out", str(tmp_path), "--set", "optim.learning_rate=1"]) == 2
    assert "optim.learning_rate: unknown key" in capsys.readouterr().err
