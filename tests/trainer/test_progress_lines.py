"""The README's family command, off a terminal, is never silent through its warm start (issue #25).

`syngrpo train --set model.policy=tiny --set sft.enabled=true --set model.family=qwen3_vl` once printed
"vision pre-training: 300 steps in 179.7 s" and then nothing for 22 minutes when its output went to a file.
Here the same command runs as a subprocess with a pipe for stderr, its warm start cut to a few steps per phase
and the progress interval cut to half a second (``logging.progress_interval_s``), and the test reads the log:
every phase reports its count, rate and time left, and no two lines of the warm start are far apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

INTERVAL_S = 0.5
#: the largest gap allowed between two lines of the warm start: the interval is 0.5 s, so only a loaded
#: machine's stall comes near it; before the fix the whole warm start wrote nothing off a terminal
MAX_GAP_S = 20.0

FAMILY_COMMAND = ["train", "--set", "model.policy=tiny", "--set", "sft.enabled=true", "--set", "model.family=qwen3_vl"]
SHORT = [
    "sft.vision_pretrain.steps=8", "sft.vision_pretrain.n_images=16", "sft.vision_pretrain.batch_size=4",
    "sft.n_images=8", "sft.plain_steps=6", "sft.steps=6", "sft.batch_size=4",
    "optim.max_steps=1", "data.toy.n_train=8", "data.toy.n_eval=4", "eval.batch_size=4", "eval.at_end=false",
    "rollout.num_generations=2", "logging.plots=false", "logging.tensorboard=false",
    f"logging.progress_interval_s={INTERVAL_S}",
]


def _run_with_timestamps(cmd, env, timeout):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    out: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    readers = [threading.Thread(target=read_err, daemon=True),
               threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    for r in readers:
        r.join(10)
    return proc.returncode, "".join(out), lines


def test_the_family_command_off_a_terminal_reports_every_warm_start_phase(tmp_path):
    env = dict(os.environ, SYNGRPO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "syngrpo.cli", *FAMILY_COMMAND, "--out", str(tmp_path / "run")]
    for item in SHORT:
        cmd += ["--set", item]
    rc, out, lines = _run_with_timestamps(cmd, env, timeout=900)
    text = "\n".join(line for _, line in lines)
    assert rc == 0, text[-3000:]
    rate = r"\d+\.\d\d (step|sample)/s|\d+\.\d\d s/(step|sample)"
    for phase, unit in (("vision pre-training", "step"), ("SFT \\(plain format\\)", "step"),
                        ("SFT \\(syn format\\)", "step"), ("eval at step 0", "sample")):
        shown = [line for _, line in lines if re.match(rf"{phase}: \d+/\d+ {unit}s", line)]
        assert shown, f"no progress line for {phase}:\n{text[-3000:]}"
        assert any(re.search(rate, line) for line in shown), shown
        assert re.search(r"done in \d+:\d\d", shown[-1]), shown
    # a line between a phase's first and last says how long is left (how many such lines a phase gets depends
    # on how fast its steps run here, so the warm start as a whole must have some, and every one an ETA)
    middle = [(line, m) for _, line in lines
              if (m := re.match(r"(vision pre-training|SFT \(\w+ format\)): (\d+)/(\d+) steps", line))
              and 0 < int(m.group(2)) < int(m.group(3))]
    assert middle, text[-3000:]
    assert all("ETA" in line for line, _ in middle), middle
    first = next(i for i, (_, line) in enumerate(lines) if line.startswith("vision pre-training"))
    last = max(i for i, (_, line) in enumerate(lines) if line.startswith("SFT (syn format)"))
    gaps = [lines[i + 1][0] - lines[i][0] for i in range(first, last)]
    assert max(gaps) <= MAX_GAP_S, (max(gaps), text[-3000:])
