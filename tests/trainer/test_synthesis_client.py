"""The trainer's synthesis client against the real ``inprocess`` job service: rejected jobs fail alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from syngrpo.config import SynthesisConfig
from syngrpo.data.pool import DataPool
from syngrpo.plugins import get_registry
from syngrpo.synthesis.client import StepSynthesis, SynthesisClient


@pytest.fixture
def toy(tmp_path):
    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "data", n=3, split="train", seed=0, image_size=56)
    return task, samples


def _client(tmp_path, task, samples, mode, delete_collected=True, **server):
    server.setdefault("segmenter", "box")
    transport = get_registry().create("transports", "inprocess", synthesizer="procedural", workers=1,
                                      data_dir=str(tmp_path / "server"), **server)
    cfg = SynthesisConfig(mode=mode, transport="inprocess", delete_collected=delete_collected)
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


# ---- the data server's disk: collected jobs are deleted there ------------------------------------------


def _server_jobs(client) -> list[str]:
    store = client.transport.service.store
    return sorted(p.name for p in store.jobs_dir.iterdir()) + [r.id for r in store.list()]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_collected_jobs_are_deleted_on_the_server_once_their_image_is_in_the_run_dir(tmp_path, toy, mode):
    task, samples = toy
    client = _client(tmp_path, task, samples, mode)
    try:
        report = StepSynthesis()
        keys = client.submit(1, 0, [(s, "a red brick wall") for s in samples], report)
        if mode == "sync":
            client.wait(keys, report)
        else:
            deadline = time.monotonic() + 20
            while report.done < 3 and time.monotonic() < deadline:
                client.collect(report)
                time.sleep(0.02)
        assert report.done == 3
        kept = sorted((tmp_path / "synth").rglob("*.png"))
        assert len(kept) == 3 and all(p.stat().st_size > 0 for p in kept)  # the run dir has every image ...
        assert _server_jobs(client) == []  # ... and the server nothing
        assert all(client.pool.current(s.id).image in map(str, kept) for s in samples)
    finally:
        client.close()


def test_failed_jobs_are_deleted_too_and_delete_collected_false_keeps_everything(tmp_path, toy):
    task, samples = toy
    client = _client(tmp_path / "a", task, samples, "sync", min_label_coverage=1.0, segmenter="object")
    try:
        report = StepSynthesis()
        client.wait(client.submit(1, 0, [(s, "a red brick wall") for s in samples], report), report)
        assert report.failed >= 1 and report.failed + report.done == 3 and _server_jobs(client) == []
    finally:
        client.close()
    keeper = _client(tmp_path / "b", task, samples, "sync", delete_collected=False)
    try:
        report = StepSynthesis()
        keeper.wait(keeper.submit(1, 0, [(s, "a red brick wall") for s in samples], report), report)
        assert report.done == 3 and len(keeper.transport.service.store.list()) == 3
    finally:
        keeper.close()


def test_a_resumed_run_asking_again_for_jobs_it_collected_and_deleted_gets_the_same_images(tmp_path, toy):
    """The checkpoint was written with the jobs in flight; the run collected (and deleted) them, then died.
    Resumed from that checkpoint, it asks for them again by key: the server makes them afresh, same seeds."""
    task, samples = toy
    client = _client(tmp_path, task, samples, "async")
    try:
        report = StepSynthesis()
        client.submit(3, 0, [(s, "a red brick wall") for s in samples], report)
        checkpoint = client.pool.state_dict()  # the jobs are in flight here
        deadline = time.monotonic() + 20
        while report.done < 3 and time.monotonic() < deadline:
            client.collect(report)
            time.sleep(0.02)
        first = {s.id: Path(client.pool.current(s.id).image).read_bytes() for s in samples}
        assert report.done == 3 and _server_jobs(client) == []

        resumed_pool = DataPool(samples, seed=0)
        resumed_pool.load_state_dict(checkpoint)  # a new trainer process on the same server
        resumed = SynthesisClient(client.transport, resumed_pool, task, client.cfg, tmp_path / "synth-resumed")
        assert resumed.resubmit_in_flight() == 3
        again = StepSynthesis()
        deadline = time.monotonic() + 20
        while again.done < 3 and time.monotonic() < deadline:
            resumed.collect(again)
            time.sleep(0.02)
        assert again.done == 3 and again.failed == 0
        assert {s.id: Path(resumed_pool.current(s.id).image).read_bytes() for s in samples} == first
        assert _server_jobs(client) == []
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_resumed_run_takes_the_jobs_it_collected_before_the_crash_from_its_run_dir_not_from_a_server(
        tmp_path, toy, mode):
    """Same run directory (a real resume): jobs collected and deleted after the checkpoint are not synthesized
    again; the resumed pool gets the very bytes the first run got, and the server is not asked."""
    task, samples = toy
    client = _client(tmp_path, task, samples, mode)
    chosen = [(s, "a red brick wall") for s in samples]
    try:
        before_step = client.pool.state_dict()  # sync mode redoes the step after this checkpoint
        report = StepSynthesis()
        keys = client.submit(4, 0, chosen, report)
        in_flight = client.pool.state_dict()  # async mode asks again for the jobs in flight here
        deadline = time.monotonic() + 20
        while report.done < 3 and time.monotonic() < deadline:
            client.wait(keys, report) if mode == "sync" else client.collect(report)
            time.sleep(0.02)
        first = {s.id: Path(client.pool.current(s.id).image).read_bytes() for s in samples}
        assert report.done == 3 and _server_jobs(client) == []

        pool = DataPool(samples, seed=0)
        pool.load_state_dict(before_step if mode == "sync" else in_flight)
        resumed = SynthesisClient(client.transport, pool, task, client.cfg, tmp_path / "synth")
        again = StepSynthesis()
        if mode == "sync":
            resumed.wait(resumed.submit(4, 0, chosen, again), again)
        else:
            assert resumed.resubmit_in_flight() == 3
            resumed.collect(again)
        store = client.transport.service.store
        assert _server_jobs(client) == [] and store.counters()["deleted_done"] == 3  # no job was made again
        assert (again.submitted if mode == "sync" else 3, again.done, again.failed) == (3, 3, 0)
        assert {s.id: Path(pool.current(s.id).image).read_bytes() for s in samples} == first
    finally:
        client.close()


def test_a_two_image_sample_gets_its_box_image_synthesized_and_keeps_the_other(tmp_path):
    """Several images per sample (issue 27 item 2): the job is the box image with its boxes; the sample that comes
    back into the pool has the synthesized box image at the same index and the other image unchanged."""
    from PIL import Image

    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "data", n=2, split="train", seed=0, image_size=56, images_per_sample=2)
    client = _client(tmp_path, task, samples, "sync")
    report = StepSynthesis()
    try:
        keys = client.submit(1, 0, [(s, "a red brick wall") for s in samples], report)
        client.wait(keys, report)
    finally:
        client.close()
    assert report.done == 2 and len(report.replacements) == 2
    for rep in report.replacements:
        old, new = next(s for s in samples if s.id == rep.job.origin_id), rep.sample
        assert new.box_image == old.box_image and new.other_images == old.other_images
        assert new.image != old.image and new.images[new.box_image] == new.image
        assert new.solution == old.solution and new.problem == old.problem
        with Image.open(new.image) as a, Image.open(old.image) as b:
            assert a.size == b.size and a.tobytes() != b.tobytes()  # repainted outside the kept box
