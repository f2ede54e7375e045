"""Ctrl-C during `syngrpo train`, as a terminal sends it: to the whole foreground process group (issue #25).

Before: the trainer died mid-step with nothing to resume (the quickstart checkpoints every 12 steps), and the
data server it spawned, hit by the same signal, was restarted by its supervisor during the shutdown. Now the
step in flight finishes and is checkpointed, the server (in a session of its own) is stopped once, not
restarted, and ``--resume`` continues from the checkpointed step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from syngrpo.rundir.checkpoint import latest_checkpoint
from syngrpo.rundir.runlog import read_jsonl

#: the quickstart at 12 steps, without the evaluations (the interruption is what is tested here)
QUICKSTART_12 = ["optim.max_steps=12", "eval.at_start=false", "eval.at_end=false", "logging.plots=false",
                 "logging.tensorboard=false", "logging.progress=false"]


def _train(tmp_path, *args):
    cmd = [sys.executable, "-m", "syngrpo.cli", "train", *args]
    for item in QUICKSTART_12:
        cmd += ["--set", item]
    env = dict(os.environ, SYNGRPO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    # a process group of its own, as a shell gives a foreground job: the signal below goes to all of it
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _steps(run):
    return [r["step"] for r in read_jsonl(run / "metrics.jsonl")]


def test_ctrl_c_at_step_2_checkpoints_the_step_and_resume_continues_from_it(tmp_path):
    run = tmp_path / "run"
    proc = _train(tmp_path, "--out", str(run))
    try:
        deadline = time.monotonic() + 600
        while not any(s >= 2 for s in _steps(run)):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "step 2 never came"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on a terminal
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    steps = _steps(run)
    stopped = steps[-1]
    assert 2 <= stopped < 12, steps
    assert f"stopped by Ctrl-C after step {stopped}, checkpointed" in out, out[-3000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"step-{stopped:06d}", ckpt
    log = (run / "train.log").read_text()
    assert f"Ctrl-C: stopping when step {stopped} is done" in log, log
    assert "restart" not in log and "exited with status" not in log, log  # the server was not restarted
    server_log = (run / "server" / "server.log").read_text()
    assert server_log.count("listening on") == 1 and "stopping the data server" in server_log, server_log

    proc = _train(tmp_path, "--resume", str(run))
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert f"resumed from {ckpt} at step {stopped}" in (run / "train.log").read_text()
    assert _steps(run) == list(range(1, 13)), _steps(run)  # each step once: none lost, none twice


def test_the_first_ctrl_c_asks_for_a_stop_and_the_second_stops_at_once():
    """Real signals to this process: the handler only flags the first, raises on the second, and is gone after."""
    from syngrpo.train.interrupt import StopAtStepEnd

    said = []
    with StopAtStepEnd(said.append, lambda: (5, None)) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested
        assert said == ["Ctrl-C: stopping when step 5 is done, then writing its checkpoint; Ctrl-C again stops at "
                        "once (--resume would then go back to nothing (no checkpoint yet))"]
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the second Ctrl-C did not stop at once")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_checkpoint_the_hint_says_how_to_checkpoint_and_where_the_warm_start_is(tmp_path):
    from syngrpo.train.interrupt import resume_hint

    run = tmp_path / "run"
    hint = resume_hint(run, step=5, save_every=12)
    assert hint == ("interrupted after step 5: no checkpoint to resume from yet (checkpoints are written every 12 "
                    "steps; --set logging.save_every=1 writes one after every step)")
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "config.json").write_text("{}")
    hint = resume_hint(run, step=0, save_every=0)
    assert hint.startswith("interrupted before the first step finished: no checkpoint to resume from yet "
                           "(checkpoints are written only at the end")
    assert hint.endswith(f"the warm start is saved: --set model.policy={run / 'sft'} --set sft.enabled=false "
                         "starts from it")


def test_the_spawned_server_is_out_of_reach_of_a_terminals_ctrl_c_and_stays_down_once_held(tmp_path):
    """A terminal signals the trainer's whole process group; the server runs in a session of its own, so the
    trainer decides when it stops. Once the trainer shuts down (``hold``), a server that exits is not restarted."""
    from syngrpo.synthesis.server.spawn import start_supervised_server

    server = start_supervised_server(None, data_dir=tmp_path / "server", check_interval_s=0.05, backoff_s=0.05)
    try:
        assert os.getpgid(server.pid) != os.getpgid(0)
        server.hold()
        server.kill()
        time.sleep(1.0)
        assert server.restarts == 0 and not server.drain_events() and not server.alive()
    finally:
        server.stop()
