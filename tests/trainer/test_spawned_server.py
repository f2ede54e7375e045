"""Fault injection on a trainer's spawned data server (real processes on 127.0.0.1, bounded in time):
the server dies with its trainer (even ``kill -9``), and a server that dies alone is restarted and
synthesis resumes, which the run's metrics and log record."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from syngrpo.rundir.runlog import read_jsonl
from syngrpo.testing import process_alive
from syngrpo.train.trainer import Trainer


def _wait(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_kill_9_of_the_trainer_stops_its_spawned_server_within_10_s(tiny_policy_dir, tmp_path, overrides_for):
    run = tmp_path / "run"
    sets = overrides_for(tiny_policy_dir, "optim.max_steps=500", "synthesis.spawn_server=true", "sft.enabled=false",
                         mode="async")
    cmd = [sys.executable, "-m", "syngrpo.cli", "train", "--out", str(run)]
    for s in sets:
        cmd += ["--set", s]
    trainer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = run / "server" / "server.lock"
    try:
        _wait(lambda: lock.is_file() and lock.read_text().strip().isdigit(), 120, "the spawned server's lock")
        server_pid = int(lock.read_text())
        assert process_alive(server_pid)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        took = _wait(lambda: not process_alive(server_pid), 10, "the orphaned server's exit")
    finally:
        trainer.kill()
    assert took < 10


def test_a_spawned_server_that_dies_is_back_within_30_s_and_synthesis_resumes(sft_policy_dir, tmp_path, registry,
                                                                              config_for):
    cfg = config_for(
        sft_policy_dir, "synthesis.spawn_server=true", "synthesis.health_interval=0",
        "synthesis.transport_options={retries: 0, submit_timeout_s: 2, connect_timeout_s: 1, poll_interval_s: 0.05}",
        "optim.max_steps=8", "rollout.max_new_tokens=80", "rollout.temperature=0.8", "optim.lr=1e-4",
        mode="sync",
    )
    run = tmp_path / "run"
    with Trainer(cfg, run, registry=registry) as trainer:
        trainer.train(until=2)
        first_pid = trainer.server.pid
        trainer.server.kill()  # as a crash would
        took = _wait(lambda: trainer.server.restarts == 1 and trainer.server.alive(), 30, "the restart")
        assert trainer.server.pid != first_pid
        trainer.train()
    assert took < 30
    steps = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    assert sorted(steps) == list(range(1, 9))
    assert steps[2]["synthesis/server_restarts"] == 0 and steps[8]["synthesis/server_restarts"] == 1
    after = [steps[s] for s in range(3, 9)]
    assert sum(r["synthesis/done"] for r in after) > 0  # synthesis resumed on the restarted server
    log = (run / "train.log").read_text()
    assert "exited with status -9" in log and "data server restarted at" in log


@pytest.mark.parametrize("token", ["short"])
def test_a_bad_synthesis_token_is_refused_before_the_run_starts(tiny_policy_dir, tmp_path, registry, config_for,
                                                                token):
    from syngrpo.errors import ConfigError

    cfg = config_for(tiny_policy_dir, "synthesis.spawn_server=true", f"synthesis.token={token}", mode="async")
    with pytest.raises(ConfigError, match="synthesis.token"):
        with Trainer(cfg, tmp_path / "run", registry=registry) as trainer:
            trainer.setup()
