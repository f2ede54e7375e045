"""SFT -> Syn-GRPO (async, real data server subprocess) -> eval, through the ``syngrpo`` command line."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from syngrpo.cli import main
from syngrpo.rundir.checkpoint import latest_checkpoint, load_state, model_dir
from syngrpo.rundir.runlog import read_jsonl

STEPS = 6


@pytest.fixture(scope="module")
def run_dir(sft_policy_dir, tmp_path_factory, overrides_for):
    out = tmp_path_factory.mktemp("e2e") / "run"
    sets = overrides_for(
        sft_policy_dir,
        "synthesis.spawn_server=true",
        "sft.enabled=true", "sft.steps=4", "sft.lr=1e-4", "sft.batch_size=4",
        f"optim.max_steps={STEPS}", "optim.batch_size=4", "optim.lr=1e-4",
        "data.toy.n_train=8", "data.toy.n_eval=8",
        "rollout.max_new_tokens=80", "rollout.temperature=0.8",
        "eval.at_start=true", "eval.at_end=true", "eval.max_new_tokens=80",
        "logging.plots=true", "logging.tensorboard=true", "logging.save_every=3",
        mode="async",
    )
    argv = ["train", "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


def test_metrics_have_every_step_with_finite_losses_and_the_papers_quantities(run_dir):
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(0, STEPS + 1))  # step 0: the evaluation after SFT
    steps = records[1:]
    for r in steps:
        for key in ("loss", "kl", "entropy", "reward/total", "reward/accuracy", "reward/format", "reward/diversity",
                    "diversity/v_mean", "diversity/smoothed_mean", "synthesis/in_flight", "time/step"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["step"], key)
        assert 0 <= r["diversity/v_mean"] <= 1 and 0 <= r["reward/diversity_raw"] <= 1
    assert all(r["synthesis/server_healthy"] == 1.0 for r in steps)
    assert "eval/acc@0.5" in records[0] and "eval/acc@0.5" in records[-1]


def test_synthesized_samples_entered_the_pool_and_the_diversity_state_advanced(run_dir):
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[-1]["synthesis/done_total"] > 0
    assert records[-1]["pool/synthesized_fraction"] > 0
    state, _ = load_state(latest_checkpoint(run_dir))
    assert state["step"] == STEPS
    assert state["smoother"]["step"] == STEPS and state["smoother"]["global_avg"] is not None
    replaced = state["pool"]["replaced"]
    assert replaced
    for origin_id, sample in replaced.items():
        assert sample["source_id"] == origin_id and sample["generation"] == 1 and sample["description"]
        with Image.open(sample["image"]) as im:
            assert im.size == (sample["width"], sample["height"])


def test_checkpoint_is_a_loadable_safetensors_model(run_dir):
    from syngrpo.models.policy import load_policy

    ckpt = latest_checkpoint(run_dir)
    assert (model_dir(ckpt) / "model.safetensors").is_file()
    bundle = load_policy(model_dir(ckpt))
    assert bundle.model_type == "qwen2_5_vl"


def test_run_directory_tells_the_story(run_dir):
    for name in ("config.yaml", "samples.jsonl", "train.log", "sft/model.safetensors", "sft/sft_stats.json",
                 "plots/fig2_entropy_diversity.png", "plots/fig7_diversity_reward.png", "plots/synthesis.png",
                 "eval/step-000000.json", f"eval/step-{STEPS:06d}.md"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    page = (run_dir / "gallery.html").read_text()
    assert "<img" in page and "Epoch" in page
    log = (run_dir / "train.log").read_text()
    assert "data server started" in log and "SFT warm start" in log
    sample = json.loads((run_dir / "samples.jsonl").read_text().splitlines()[0])
    assert len(sample["completions"]) == 3 and "diversity" in sample["completions"][0]


def test_data_server_was_stopped(run_dir):
    import urllib.request

    server_log = (run_dir / "server" / "server.log").read_text()
    url = next(line.split("http://")[1].split()[0] for line in (run_dir / "train.log").read_text().splitlines()
               if "data server started at" in line)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{url}/healthz", timeout=2)
    assert server_log  # the server wrote its log into the run directory


def test_eval_command_scores_the_checkpoint(run_dir, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(run_dir), "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads(next(tmp_path.glob("eval-*.json")).read_text())
    assert report["task"] == "rec" and report["metrics"]["n"] == 8
    assert 0 <= report["metrics"]["acc@0.5"] <= 1
    assert "| acc@0.5 |" in capsys.readouterr().out
    assert next(tmp_path.glob("eval-*.predictions.jsonl")).read_text().count("\n") == 8
