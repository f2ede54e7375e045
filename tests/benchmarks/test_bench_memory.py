"""Issue 5 item 6: peak resident memory of the quickstart (``syngrpo train`` with no config).

The quickstart runs in a child process exactly as a user runs it (the tiny model
built into a private cache, SFT warm start, Syn-GRPO with its own data-server
subprocess, evaluation).  The peak RSS of the trainer and of the data server are
sampled from ``/proc`` every 0.1 s (psutil), and the kernel's own figure for the
largest child (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) is read after it exits.
Quick mode shortens the run (2 RL steps, 10 SFT steps, 4 evaluation samples),
which leaves the peak nearly unchanged: it is set by the models and the first step.
The peak of one scoring pass at G = 6 is measured in ``test_bench_scoring.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support import server_env

pytestmark = pytest.mark.benchmark

QUICK_OVERRIDES = ["optim.max_steps=2", "sft.steps=10", "sft.n_images=16", "sft.vision_pretrain.steps=3",
                   "sft.vision_pretrain.n_images=8", "eval.max_samples=4", "logging.save_every=0"]


def _sample_tree(proc: subprocess.Popen, peaks: dict[str, float]) -> None:
    """Peak RSS (MiB) of the trainer, of its children (the data server), and of their sum."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        kids = parent.children(recursive=True)
        trainer = parent.memory_info().rss
        children = sum(k.memory_info().rss for k in kids if k.is_running())
    except psutil.Error:
        return
    mib = 1024 * 1024
    peaks["trainer"] = max(peaks.get("trainer", 0.0), trainer / mib)
    peaks["server"] = max(peaks.get("server", 0.0), children / mib)
    peaks["total"] = max(peaks.get("total", 0.0), (trainer + children) / mib)


def test_peak_memory_of_the_quickstart(tmp_path, figures, quick):
    pytest.importorskip("psutil")
    out = tmp_path / "run"
    env = server_env()
    env["SYNGRPO_CACHE"] = str(tmp_path / "cache")
    cmd = [sys.executable, "-m", "syngrpo.cli", "train", "--out", str(out)]
    if quick:
        for item in QUICK_OVERRIDES:
            cmd += ["--set", item]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peaks: dict[str, float] = {}
    t0 = time.perf_counter()
    with open(tmp_path / "train.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            while proc.poll() is None:
                _sample_tree(proc, peaks)
                time.sleep(0.1)
                if time.perf_counter() - t0 > 900:
                    raise TimeoutError("the quickstart ran longer than 15 minutes")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - t0
    log_tail = (tmp_path / "train.log").read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, log_tail
    assert (out / "config.yaml").is_file() or any(out.iterdir())
    largest_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
    steps = _steps_logged(out)
    assert steps >= (2 if quick else 30), steps
    figures("Quickstart peak RSS: trainer process", peaks.get("trainer", 0.0), unit="MiB", target="record",
            kernel_maxrss_largest_child_mib=largest_child if largest_child > before / 1024 else None,
            seconds=seconds, rl_steps=steps, quick=quick)
    figures("Quickstart peak RSS: data server process", peaks.get("server", 0.0), unit="MiB", target="record")
    figures("Quickstart peak RSS: trainer + server", peaks.get("total", 0.0), unit="MiB", target="record",
            seconds=seconds, cpus=os.cpu_count())


def _steps_logged(run_dir: Path) -> int:
    """How many RL steps the run's metrics log holds."""
    for name in ("metrics.jsonl", "logs/metrics.jsonl"):
        path = run_dir / name
        if path.is_file():
            steps = {json.loads(line).get("step") for line in path.read_text().splitlines() if line.strip()}
            return len({s for s in steps if isinstance(s, int) and s > 0})
    return -1
