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


def test_jobs_carry_the_labels_the_task_chooses(tmp_path, toy):
    """``Task.foreground_labels`` decides what the data server is told about each kept box."""
    task, samples = toy
    objects = samples[0].meta["objects"]  # REC toy: every drawn object is kept, each told by its own label
    assert task.foreground_labels(samples[0]) == [o["label"] for o in objects] and len(objects) > 1

    class Relabelled(type(task)):
        def foreground_labels(self, sample):
            return ["the kept object"] * len(self.foreground_boxes(sample))

    client = _client(tmp_path, Relabelled(), samples, "sync")
    try:
        report = StepSynthesis()
        client.submit(1, 0, [(samples[0], "a brick wall")], report)
        pending = next(iter(client.pool.in_flight.values()))
        assert client._job_for(pending).labels == ["the kept object"] * len(objects)
    finally:
        client.close()


def test_a_task_giving_the_wrong_number_of_labels_is_an_error_naming_it(tmp_path, toy):
    task, samples = toy

    class Broken(type(task)):
        def foreground_labels(self, sample):
            return []

    client = _client(tmp_path, Broken(), samples, "sync")
    try:
        with pytest.raises(ValueError, match="foreground_labels gave 0 labels for 1"):
            client._labels_for(samples[0], 1)
    finally:
        client.close()
