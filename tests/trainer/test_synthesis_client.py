"""The trainer's synthesis client against the real ``inprocess`` job service: rejected jobs fail alone."""

from __future__ import annotations

import pytest

from syngrpo.config import SynthesisConfig
from syngrpo.plugins import get_registry
from syngrpo.pool import DataPool
from syngrpo.synthesis_client import StepSynthesis, SynthesisClient


@pytest.fixture
def toy(tmp_path):
    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "data", n=3, split="train", seed=0, image_size=56)
    return task, samples


def _client(tmp_path, task, samples, mode, **server):
    transport = get_registry().create("transports", "inprocess", synthesizer="procedural", segmenter="box",
                                      workers=1, data_dir=str(tmp_path / "server"), **server)
    cfg = SynthesisConfig(mode=mode, transport="inprocess")
    return SynthesisClient(transport, DataPool(samples, seed=0), task, cfg, tmp_path / "synth")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_job_the_server_rejects_fails_alone_and_synthesis_stays_up(tmp_path, toy, mode):
    task, samples = toy
    client = _client(tmp_path, task, samples, mode, max_image_pixels=16)  # every toy image is too large
    report = StepSynthesis()
    try:
        keys = client.submit(1, 0, [(s, "a red brick wall") for s in samples], report)
    finally:
        client.close()
    assert keys == [] and report.submitted == 3 and report.failed == 3 and report.skipped_down == 0
    assert client.healthy  # one bad image does not stop synthesis for everyone
    assert all("rejected" in e and "pixels" in e for e in report.errors)
    assert client.pool.in_flight == {} and client.pool.synthesized_fraction() == 0.0


def test_accepted_jobs_come_back_into_the_pool(tmp_path, toy):
    task, samples = toy
    client = _client(tmp_path, task, samples, "sync")
    report = StepSynthesis()
    try:
        keys = client.submit(1, 0, [(s, "a red brick wall") for s in samples], report)
        client.wait(keys, report)
    finally:
        client.close()
    assert len(keys) == 3 and report.done == 3 and report.failed == 0
    assert client.pool.synthesized_fraction() == 1.0
