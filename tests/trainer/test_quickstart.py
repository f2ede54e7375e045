"""The README's main-job command: ``syngrpo train`` with no config, on a CPU, in under 5 minutes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from syngrpo.runlog import read_jsonl


@pytest.mark.slow
def test_quickstart_runs_end_to_end_in_under_five_minutes(tmp_path):
    env = dict(os.environ, SYNGRPO_CACHE=str(tmp_path / "cache"),  # a fresh machine: the tiny model is built
               OMP_NUM_THREADS="1")
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "syngrpo.cli", "train", "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - started
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # trainer + data server
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Wall time on a shared machine measures the neighbours; the CPU time it needs is what it costs. Two
    # cores give 600 CPU-seconds in 5 minutes: ask for half of that.
    # with one torch thread (as in CI) the CPU time is about the wall time of an idle 2-core machine
    assert cpu < 330, f"the quickstart used {cpu:.0f} CPU-seconds ({wall:.0f} s wall)"
    run = tmp_path / "run"
    assert f"run directory: {run}" in proc.stdout
    records = read_jsonl(run / "metrics.jsonl")
    assert records[-1]["step"] == 36 and records[-1]["pool/synthesized_fraction"] > 0
    assert records[0]["eval/format"] > 0.5  # the SFT warm start taught the response format
    # it learns visibly: localises after the warm start, RL keeps it, the reward does not fall
    before, after = records[0]["eval/acc@0.5"], records[-1]["eval/acc@0.5"]
    assert after >= 0.3 and after >= before, (before, after)
    totals = [r["reward/total"] for r in records if r["step"] > 0]
    assert sum(totals[-9:]) >= sum(totals[:9]), totals
    assert (run / "summary.md").is_file() and proc.stdout.strip().splitlines()[-1].startswith("What it means")
    assert (run / "gallery.html").is_file() and (run / "plots" / "fig2_entropy_diversity.png").is_file()
    assert list((tmp_path / "cache").glob("tiny-policy-seed0*/config.json"))
