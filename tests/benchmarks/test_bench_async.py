"""Issue 5 item 1: the paper's Table 5, asynchronous synthesis costs (almost) nothing.

Syn-GRPO's Table 5: synchronous synthesis takes ~2.16x the training time of
plain GRPO, asynchronous 1.02-1.06x.  Here: steps of the real trainer
(:meth:`syngrpo.train.trainer.Trainer.train_step`) on the tiny Qwen2.5-VL, with
``synthesis.mode`` off (plain GRPO), ``sync`` and ``async``, against a real
``syngrpo serve`` child process.

So that the figure measures the design and not CPU contention, the trainers (this
process, one torch thread) run on one core and the data servers on the other
(``sched_setaffinity``).  The servers' synthesizer (``bench_slow``, registered by
``slow_synthesizer.py`` through the server's ``plugins:`` key) takes, per batch,
about one plain training step: its per-job time is set from a calibration
block of plain steps.  All modes use the Syn-GRPO response format and the same
seed (the same batches at the same step), so the only difference between them is
synthesis.  The three trainers live side by side and take blocks of steps in
turn, the order rotating between rounds, so that the machine's load drifts (it
is shared) hit every mode alike; sync and async each have their own server, so
sync never waits behind async's jobs.

The first step of every block is not timed.  Two reasons: a mode switch is not
steady state (while sync waits, or right after, the machine's other processes
move onto the trainer's idle core and slow the next steps down whatever mode they
are), and the async transport polls and downloads results in a thread of the
trainer's process, competing with generation for the GIL: the downloads an async
block leaves behind then fall into an untimed step, while every timed async step
carries a steady state's submissions, downloads and collection.
The figure also reports the time async adds outside model work (submit + collect).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import core_plan, median, start_server, thread_affinity

pytestmark = pytest.mark.benchmark

BATCH = 4
#: the server's synthesizer computes on its core (True) or sleeps (False, default): the paper's synthesizer runs on
#: the server's own GPUs and leaves the host CPU idle, and on a shared 2-core machine a busy server core pushes the
#: machine's other processes onto the trainer's core (measured: async/plain 1.84 busy vs 1.14 sleeping, same run)
BUSY_SYNTHESIZER = os.environ.get("SYNGRPO_BENCH_BUSY_SYNTH", "0") == "1"
#: options of the aiohttp transport (``SYNGRPO_BENCH_POLL_S`` sets its poll interval, default the transport's own)
TRANSPORT_OPTIONS = ({"poll_interval_s": float(os.environ["SYNGRPO_BENCH_POLL_S"])}
                     if os.environ.get("SYNGRPO_BENCH_POLL_S") else {})


def _config(mode: str, url: str, policy_dir: Path, data_dir: Path, *, job_seconds: float, new_tokens: int):
    from syngrpo.config import TrainConfig

    return TrainConfig.model_validate({
        "seed": 0,
        "model": {"policy": str(policy_dir), "dtype": "float32", "device": "cpu"},
        "data": {"task": "rec", "toy": {"n_train": 32, "n_eval": 4, "image_size": 112, "seed": 0},
                 "toy_dir": str(data_dir)},
        "rollout": {"num_generations": 6, "max_new_tokens": new_tokens, "temperature": 1.0,
                    "response_format": "syn"},
        "algorithm": {"beta": 0.04},
        "synthesis": {"mode": mode, "servers": [url], "job_options": {"min_seconds": job_seconds},
                      "max_in_flight": 64, "sync_timeout": 120.0, "health_interval": 1.0,
                      "transport_options": TRANSPORT_OPTIONS},
        "optim": {"lr": 1e-5, "batch_size": BATCH, "max_steps": 1000},
        "sft": {"enabled": False},
        "eval": {"at_end": False},
        "logging": {"tensorboard": False, "plots": False, "gallery": False, "progress": False,
                    "samples_every": 0},
    })


def test_async_synthesis_costs_almost_nothing_table5(tmp_path, warm_policy_dir, figures, quick):
    import time

    from syngrpo.train.trainer import Trainer

    trainer_cpus, server_cpus = core_plan()
    data_dir = tmp_path / "data"
    block, rounds, new_tokens = (1, 1, 96) if quick else (4, 4, 96)
    # one server per synthesis mode, so that sync never queues behind async's jobs
    servers = {mode: start_server(tmp_path / f"server-{mode}", server_cpus, synthesizer="bench_slow",
                                  plugins=["benchmarks.slow_synthesizer"], queue_size=256,
                                  synthesizer_options={"busy": BUSY_SYNTHESIZER})
               for mode in ("sync", "async")}
    trainers: dict[str, Trainer] = {}
    times: dict[str, list[float]] = {"off": [], "sync": [], "async": []}
    metrics: dict[str, list[dict]] = {"off": [], "sync": [], "async": []}
    steps = {"off": 0, "sync": 0, "async": 0}

    def run_steps(mode: str, n: int, *, record: bool = True) -> None:
        tr = trainers[mode]
        for _ in range(n):
            steps[mode] += 1
            t0 = time.perf_counter()
            m = tr.train_step(steps[mode])
            dt = time.perf_counter() - t0
            tr.step = steps[mode]
            if record:
                times[mode].append(dt)
                metrics[mode].append(m)

    def make(mode: str, job_seconds: float) -> None:
        url = servers.get(mode, servers["sync"]).url
        cfg = _config(mode, url, warm_policy_dir, data_dir, job_seconds=job_seconds, new_tokens=new_tokens)
        trainers[mode] = Trainer(cfg, tmp_path / f"run-{mode}")
        trainers[mode].setup()

    try:
        with thread_affinity(trainer_cpus):
            # calibration: one batch of synthesis should take about one plain step
            make("off", 0.0)
            run_steps("off", 1, record=False)  # warm-up
            run_steps("off", 2)
            job_seconds = median(times["off"]) / BATCH
            for mode in ("sync", "async"):
                make(mode, job_seconds)
                run_steps(mode, 1, record=False)
            orders = [("off", "sync", "async"), ("sync", "async", "off"), ("async", "off", "sync")]
            for r in range(rounds):
                for mode in orders[r % len(orders)]:
                    run_steps(mode, 1, record=False)  # absorbs the switch (see the module doc)
                    run_steps(mode, block)
    finally:
        for tr in trainers.values():
            tr.close()
        for srv in servers.values():
            srv.stop()

    # behaviour: sync waited for each batch's images and got them all; async never waited
    sync_m, async_m = metrics["sync"], metrics["async"]
    assert sync_m and async_m
    assert all(m["synthesis/submitted"] >= 1 for m in sync_m + async_m)
    assert all(m["synthesis/done"] == m["synthesis/submitted"] and m["synthesis/wait_seconds"] > 0 for m in sync_m)
    assert all(m["synthesis/wait_seconds"] == 0 for m in async_m)
    assert all(m["synthesis/server_healthy"] == 1.0 and m["synthesis/failed"] == 0 for m in sync_m + async_m)
    if not quick:
        assert sum(m["synthesis/done"] for m in async_m) > 0  # images came back while training went on

    t_off, t_sync, t_async = (median(times[k]) for k in ("off", "sync", "async"))
    # what the steps did: synthesized images change what the policy writes, hence how long a step takes
    per_mode = {k: {"completion_tokens": median([m["completion/mean_length"] for m in metrics[k]]),
                    "rollout_s": median([m["time/rollout"] for m in metrics[k]]),
                    "update_s": median([m["time/update"] for m in metrics[k]]),
                    # the step minus its model work: batch, rewards, and synthesis (submit, collect or wait)
                    "other_s": median([t - m["time/rollout"] - m["time/update"]
                                       for t, m in zip(times[k], metrics[k], strict=True)])} for k in times}
    common = dict(per_mode=per_mode, plain_step_s=t_off, sync_step_s=t_sync, async_step_s=t_async, job_seconds=job_seconds,
                  busy_synthesizer=BUSY_SYNTHESIZER, batch=BATCH, group=6, new_tokens=new_tokens,
                  timed_steps_per_mode=len(times["async"]), pinned=trainer_cpus is not None, cpus=os.cpu_count(),
                  sync_wait_s=median([m["synthesis/wait_seconds"] for m in sync_m]),
                  jobs_per_step=median([m["synthesis/submitted"] for m in sync_m + async_m]))
    figures("Table 5: async step time / plain GRPO", t_async / t_off, target="<= 1.03", met=t_async / t_off <= 1.03,
            **common)
    figures("Table 5: sync step time / plain GRPO", t_sync / t_off, target="report (paper 2.16)", **common)
    extra_ms = 1e3 * (per_mode["async"]["other_s"] - per_mode["off"]["other_s"])
    figures("Table 5: async time added per step, outside model work", extra_ms, unit="ms", target="report",
            jobs_per_step=common["jobs_per_step"], off_other_ms=1e3 * per_mode["off"]["other_s"],
            async_other_ms=1e3 * per_mode["async"]["other_s"])
