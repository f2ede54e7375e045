"""With the data server down, training goes on with the pool's samples and says so; when it is back, synthesis resumes."""

from __future__ import annotations

import math

import pytest

from syngrpo.rundir.runlog import read_jsonl
from syngrpo.synthesis.server.spawn import start_server_subprocess
from syngrpo.train.trainer import Trainer


@pytest.fixture
def server(tmp_path):
    handle = start_server_subprocess(data_dir=tmp_path / "server")
    yield handle
    handle.stop()


def test_training_survives_a_dead_server_and_synthesis_resumes_when_it_returns(server, sft_policy_dir, tmp_path,
                                                                                registry, config_for):
    cfg = config_for(
        sft_policy_dir,
        f"synthesis.servers=[{server.url}]",
        "synthesis.health_interval=0",
        "synthesis.transport_options={retries: 0, submit_timeout_s: 2, connect_timeout_s: 1, poll_interval_s: 0.05}",
        "optim.max_steps=9", "optim.batch_size=2", "data.toy.n_train=8",
        "rollout.max_new_tokens=80", "rollout.temperature=0.8", "optim.lr=1e-4",
        mode="async",
    )
    run = tmp_path / "run"
    restarted = None
    with Trainer(cfg, run, registry=registry) as trainer:
        trainer.train(until=2)
        server.kill()  # as a crash would
        trainer.train(until=5)
        restarted = start_server_subprocess(port=server.port, data_dir=tmp_path / "server")
        try:
            trainer.train()
        finally:
            restarted.stop()

    steps = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    assert sorted(steps) == list(range(1, 10))
    assert all(math.isfinite(r["loss"]) for r in steps.values())  # training never stopped
    assert steps[1]["synthesis/server_healthy"] == 1.0 and steps[1]["synthesis/submitted"] > 0
    # Async mode submits fire-and-forget: step 3's first jobs may leave before the outage is known; they come
    # back refused (failed, the samples unchanged) and the next submission marks the server down.
    assert steps[3]["synthesis/submitted"] <= sum(steps[s]["synthesis/failed"] for s in (3, 4, 5))
    down = [steps[s] for s in (4, 5)]
    assert all(r["synthesis/server_healthy"] == 0.0 for r in down)
    assert sum(steps[s]["synthesis/skipped_server_down"] for s in (3, 4, 5)) > 0
    assert all(r["synthesis/submitted"] == 0 for r in down)
    back = [steps[s] for s in range(6, 10)]
    assert all(r["synthesis/server_healthy"] == 1.0 for r in back)
    assert sum(r["synthesis/submitted"] for r in back) > 0
    assert steps[9]["synthesis/done_total"] > steps[5]["synthesis/done_total"]
    log = (run / "train.log").read_text()
    assert "data server unavailable" in log and "training continues" in log and "data server is back" in log


def test_a_server_that_never_answers_leaves_the_originals(sft_policy_dir, tmp_path, registry, config_for):
    cfg = config_for(
        sft_policy_dir,
        "synthesis.servers=[http://127.0.0.1:9]",  # discard port: nothing listens there
        "synthesis.health_interval=60",
        "synthesis.transport_options={retries: 0, submit_timeout_s: 1, connect_timeout_s: 0.5}",
        # train on without synthesis; the default (stop) is tests/trainer/test_synthesis_accounting.py's business
        "synthesis.on_failure=warn",
        "optim.max_steps=2", "data.toy.n_train=4", "rollout.max_new_tokens=80", "rollout.temperature=0.8",
        mode="async",
    )
    with Trainer(cfg, tmp_path, registry=registry) as trainer:
        trainer.train()
        assert trainer.pool.synthesized_fraction() == 0.0
    last = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert last["synthesis/server_healthy"] == 0.0 and last["pool/synthesized_fraction"] == 0.0
