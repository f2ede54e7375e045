"""A run that synthesised nothing (or too little) does not end as if it had been Syn-GRPO, and ids a data
server cannot take as keys still reach it.

Issue #24: a 6-step run with 0 of 20 jobs done exited 0 without a warning; ids holding ``/`` were refused by
the server as job keys (422) and a 12-step run exited 0 with 0 of 38 jobs done and no reason logged.
Real transports: a ``syngrpo serve`` subprocess over HTTP, and the in-process server.
"""

from __future__ import annotations

import pytest
from PIL import Image

from syngrpo.config import SynthesisConfig
from syngrpo.data.pool import DataPool
from syngrpo.plugins import get_registry
from syngrpo.rundir.checkpoint import latest_checkpoint
from syngrpo.synthesis.client import StepSynthesis, SynthesisClient, SynthesisFailure
from syngrpo.synthesis.server.spawn import start_server_subprocess
from syngrpo.synthesis.server.validation import check_key
from syngrpo.train.trainer import Trainer

#: ids of real datasets that are not job keys: paths, dots, too long, not ASCII
AWKWARD_IDS = ["coco/train2017/000000000139.jpg", "refcoco/../x", "coco_train2017_000000000139.jpg", "r" * 300,
               "bildnummer-ä-🙂"]


@pytest.fixture
def toy(tmp_path):
    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path / "data", n=len(AWKWARD_IDS), split="train", seed=0, image_size=56)
    return task, samples


def _client(tmp_path, task, samples, transport, messages, **cfg):
    conf = SynthesisConfig(mode="sync", transport="inprocess", sync_timeout=60, **cfg)
    return SynthesisClient(transport, DataPool(samples, seed=0), task, conf, tmp_path / "synth",
                           message=messages.append)


def _step(client, samples, step=1):
    report = StepSynthesis()
    keys = client.submit(step, 0, [(s, "a red brick wall") for s in samples], report)
    client.wait(keys, report)
    return keys, report


def test_ids_a_server_cannot_take_as_keys_reach_a_real_server_under_distinct_safe_keys(tmp_path, toy):
    task, samples = toy
    samples = [s.evolve(id=i) for s, i in zip(samples, AWKWARD_IDS, strict=True)]
    messages: list[str] = []
    with start_server_subprocess(data_dir=tmp_path / "server") as server:
        transport = get_registry().create("transports", "aiohttp", urls=[server.url], retries=0)
        client = _client(tmp_path, task, samples, transport, messages)
        try:
            keys, report = _step(client, samples)
        finally:
            client.close()
    assert report.failed == 0 and report.errors == [], report.errors
    assert report.done == len(AWKWARD_IDS)
    assert len(set(keys)) == len(keys)
    for key in keys:
        check_key(key)  # the server's own rule
    assert {r.sample.source_id for r in report.replacements} == set(AWKWARD_IDS)


def test_a_short_share_of_finished_jobs_done_ends_the_run_as_on_failure_says(tmp_path, toy):
    task, samples = toy
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), "white").save(big)
    mixed = [samples[0], samples[1].evolve(image=str(big), width=200, height=200)]  # the server refuses the second
    inprocess = get_registry().create("transports", "inprocess", workers=1, data_dir=str(tmp_path / "server"),
                                      max_image_pixels=100 * 100)
    messages: list[str] = []
    client = _client(tmp_path, task, mixed, inprocess, messages, min_done_share=0.75)
    try:
        _step(client, mixed)
        with pytest.raises(SynthesisFailure, match=r"1 of 2 jobs sent.*50% of those done.*below.*75%"):
            client.finish()
    finally:
        client.close()
    assert any("synthesis job failed" in m and "image_too_large" in m for m in messages), "the reason, said as it happened"


def test_a_run_whose_policy_sent_nothing_says_so_without_failing(tmp_path, toy):
    task, samples = toy
    messages: list[str] = []
    client = _client(tmp_path, task, samples, None, messages)
    client.finish()
    assert any("synthesis never ran" in m for m in messages)


@pytest.mark.parametrize("on_failure", ["stop", "warn"])
def test_a_run_that_synthesised_nothing_does_not_end_as_if_it_had(sft_policy_dir, tmp_path, config_for, registry,
                                                                  on_failure):
    """Two steps, every job refused by the server (its pixel limit is below every image), far fewer steps than
    ``max_failed_steps``: a misspelt job option would be caught by ``syngrpo check`` before the run."""
    cfg = config_for(sft_policy_dir, "synthesis.transport=inprocess", "synthesis.transport_options={max_image_pixels: 16}",
                     f"synthesis.on_failure={on_failure}", "optim.max_steps=2", "rollout.max_new_tokens=80",
                     "optim.batch_size=4", mode="sync")
    run = tmp_path / "run"
    with Trainer(cfg, run, registry=registry) as t:
        if on_failure == "stop":
            with pytest.raises(SynthesisFailure, match=r"synthesis produced 0 of \d+ jobs.*image_too_large"):
                t.train()
        else:
            t.train()
    log = (run / "train.log").read_text()
    assert latest_checkpoint(run).name == "step-000002", "the run's work is saved either way"
    assert "synthesis job failed" in log and "image_too_large" in log
    assert ("the run failed: synthesis produced 0" if on_failure == "stop"
            else "WARNING: synthesis failed in this run") in log
