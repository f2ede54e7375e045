"""Synthesis that never works is loud: the run stops (or warns, by config) after N failed steps, and at
once when the server refuses the token.  Real transports: ``inprocess`` and ``aiohttp`` to a real server."""

from __future__ import annotations

import pytest

from syngrpo.config import SynthesisConfig
from syngrpo.data.pool import DataPool
from syngrpo.plugins import get_registry
from syngrpo.synthesis.client import StepSynthesis, SynthesisClient, SynthesisFailure
from syngrpo.synthesis.server.spawn import start_server_subprocess


@pytest.fixture
def toy(tmp_path):
    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "data", n=2, split="train", seed=0, image_size=56)
    return task, samples


def _client(tmp_path, toy, transport, messages, **cfg):
    task, samples = toy
    conf = SynthesisConfig(mode="sync", transport="inprocess", sync_timeout=20, **cfg)
    return SynthesisClient(transport, DataPool(samples, seed=0), task, conf, tmp_path / "synth",
                           message=messages.append)


def _steps(client, toy, n):
    _, samples = toy
    for step in range(1, n + 1):
        report = StepSynthesis()
        keys = client.submit(step, 0, [(s, "a red brick wall") for s in samples], report)
        client.wait(keys, report)


def _inprocess(tmp_path):
    return get_registry().create("transports", "inprocess", workers=1, data_dir=str(tmp_path / "server"))


def test_a_typo_in_the_job_options_stops_the_run_after_max_failed_steps(tmp_path, toy):
    messages: list[str] = []
    client = _client(tmp_path, toy, _inprocess(tmp_path), messages, job_options={"distractorz": 2},
                     max_failed_steps=3, failure_grace_s=0)
    try:
        _steps(client, toy, 2)  # two failed steps: not yet
        with pytest.raises(SynthesisFailure, match="every synthesis job that finished has failed.*distractorz"):
            _steps(client, toy, 1)
    finally:
        client.close()
    assert any(m.startswith("stopping:") for m in messages)


def test_on_failure_warn_trains_on_but_says_so_loudly(tmp_path, toy, caplog):
    messages: list[str] = []
    client = _client(tmp_path, toy, _inprocess(tmp_path), messages, job_options={"distractors": 10**7},
                     max_failed_steps=2, failure_grace_s=0, on_failure="warn")
    try:
        _steps(client, toy, 4)
    finally:
        client.close()
    warnings = [m for m in messages if m.startswith("WARNING: synthesis is failing")]
    assert len(warnings) == 2  # at steps 2 and 4: every max_failed_steps failed steps
    assert "SYNTHESIS IS FAILING" in caplog.text


def test_a_refused_token_stops_the_run_at_once(tmp_path, toy):
    messages: list[str] = []
    with start_server_subprocess(data_dir=tmp_path / "server", token="the-right-token") as server:
        transport = get_registry().create("transports", "aiohttp", urls=[server.url], token="a-wrong-token",
                                          retries=0, submit_timeout_s=2)
        client = _client(tmp_path, toy, transport, messages, max_failed_steps=50)
        try:
            with pytest.raises(SynthesisFailure, match="refused this run's token.*401"):
                _steps(client, toy, 1)
        finally:
            client.close()


def test_a_server_down_for_n_steps_stops_the_run(tmp_path, toy):
    messages: list[str] = []
    transport = get_registry().create("transports", "aiohttp", urls=["http://127.0.0.1:9"], retries=0,
                                      submit_timeout_s=1, connect_timeout_s=0.5)
    client = _client(tmp_path, toy, transport, messages, max_failed_steps=3, failure_grace_s=0, health_interval=0)
    try:
        with pytest.raises(SynthesisFailure, match="unavailable for 3 steps"):
            _steps(client, toy, 5)
    finally:
        client.close()
