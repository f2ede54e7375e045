"""The run directory: metrics, samples, TensorBoard events, plots and the gallery."""

from __future__ import annotations

import json
import math

from PIL import Image

from syngrpo.rundir.runlog import RunLog, read_jsonl


def _metrics(step: int) -> dict:
    return {
        "progress": step / 10,
        "reward/total": 1.0 + step / 10,
        "reward/accuracy": 0.1 * step,
        "reward/format": 1.0,
        "reward/diversity": 0.5,
        "reward/diversity_unsmoothed": 0.4,
        "entropy": 2.0 - 0.1 * step,
        "diversity/v_mean": 0.3,
        "diversity/smoothed_mean": 0.35,
        "kl": float("nan"),
    }


def test_metrics_are_one_json_line_per_step_with_nan_as_null(tmp_path):
    rl = RunLog(tmp_path, total_steps=3, progress=False, tensorboard=False)
    for step in (1, 2, 3):
        rl.log(step, _metrics(step))
    rl.close()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[1]["reward/accuracy"] == 0.2
    assert records[0]["kl"] is None


def test_tensorboard_events_are_written(tmp_path):
    rl = RunLog(tmp_path, progress=False, tensorboard=True)
    rl.log(1, _metrics(1))
    rl.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    rl = RunLog(tmp_path, progress=False, tensorboard=False)
    for step in range(1, 6):
        rl.log(step, _metrics(step))
        rl.samples(step, [{"text": f"completion {step}", "reward": 1.0}])
    rl.close()
    RunLog(tmp_path, start_step=3, progress=False, tensorboard=False).close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert [r["step"] for r in read_jsonl(tmp_path / "samples.jsonl")] == [1, 2, 3]


def test_a_torn_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "rew')
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1}]


def test_plots_of_the_papers_curves_are_pngs(tmp_path):
    rl = RunLog(tmp_path, progress=False, tensorboard=False)
    for step in range(1, 5):
        rl.log(step, _metrics(step))
    written = {p.name for p in rl.write_plots()}
    rl.close()
    assert {"fig2_entropy_diversity.png", "fig7_diversity_reward.png", "rewards.png"} <= written
    assert "synthesis.png" not in written  # no synthesis numbers logged: no empty plot
    with Image.open(tmp_path / "plots" / "fig2_entropy_diversity.png") as im:
        assert im.format == "PNG" and im.width > 100


def test_gallery_shows_original_beside_synthesized_with_the_description(tmp_path):
    orig, syn = tmp_path / "o.png", tmp_path / "s.png"
    Image.new("RGB", (64, 48), "red").save(orig)
    Image.new("RGB", (64, 48), "blue").save(syn)
    rl = RunLog(tmp_path / "run", progress=False, tensorboard=False, gallery_per_epoch=2)
    for i in range(3):
        rl.gallery_add(step=i + 1, epoch=0, origin_id=f"s{i}", original=orig, synthesized=syn,
                       description=f"a <snowy> street {i}")
    assert rl.gallery_add(step=9, epoch=1, origin_id="s0", original=orig, synthesized=syn, description="x")
    page = rl.write_gallery().read_text()
    rl.close()
    assert page.count("<tr><td><img") == 3  # two for epoch 1 (the cap), one for epoch 2
    assert "a &lt;snowy&gt; street 0" in page and "Epoch 2" in page
    for name in ("e0-s1-s0-g1-original.jpg", "e0-s1-s0-g1-synth.jpg"):
        assert (tmp_path / "run" / "gallery" / name).is_file()


def test_gallery_skips_an_unreadable_image(tmp_path):
    rl = RunLog(tmp_path, progress=False, tensorboard=False)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert not rl.gallery_add(step=1, epoch=0, origin_id="s", original=bad, synthesized=bad, description="d")
    assert "No synthesized image" in rl.write_gallery().read_text()
    rl.close()


def test_without_a_terminal_progress_is_plain_lines(tmp_path, capsys):
    rl = RunLog(tmp_path, total_steps=2, progress=True, tensorboard=False)
    rl.log(1, _metrics(1))
    rl.message("server down: training on originals")
    rl.log(2, _metrics(2))
    rl.close()
    err = capsys.readouterr().err
    assert "syn-grpo: 2/2 steps (100 %)" in err and "reward/total=1.2" in err
    assert "server down: training on originals" in (tmp_path / "train.log").read_text()
    assert math.isfinite(read_jsonl(tmp_path / "metrics.jsonl")[-1]["reward/total"])
