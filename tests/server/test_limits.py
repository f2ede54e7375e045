"""One client cannot take the data server down: bounded job options, time-outs that fail only their
job, an atomic queue limit, strict keys and a POST list query.  (Request bodies in flight, counted
as they arrive and per client: test_hostile_bodies.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import get_registry
from syngrpo.synthesis.pipeline import check_deadline
from syngrpo.synthesis.server.app import create_app

from .support import ControlledPlugin, job_body, wait_for_state, wait_until


async def submit(client, key: str, **changes) -> str:
    resp = await client.post("/v1/jobs", json=job_body(key, **changes))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


# ----------------------------------------------------------------------------- bounded job options


async def test_job_options_beyond_the_synthesizers_declared_range_are_refused_with_the_range(aiohttp_client,
                                                                                            config_for):
    client = await aiohttp_client(create_app(config_for()))
    resp = await client.post("/v1/jobs", json=job_body("big", options={"distractors": 40000}))
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_options" and "options.distractors" in err["message"]
    assert "less than or equal to 64" in err["message"]
    assert err["allowed"]["distractors"]["maximum"] == 64  # the client learns the range
    typo = await client.post("/v1/jobs", json=job_body("typo", options={"distractorz": 3}))
    assert typo.status == 422 and "unknown option" in (await typo.json())["error"]["message"]
    ok = await client.post("/v1/jobs", json=job_body("fine", options={"distractors": 3}))
    assert ok.status == 201
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"


class CooperativeSlow:
    """A synthesizer whose jobs never end on their own but check the deadline, as the built-ins do."""

    max_batch_size = 1

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def synthesize(self, requests):
        from PIL import Image

        if "slow" in requests[0].description:
            while True:
                check_deadline()
                time.sleep(0.005)
        return [Image.new("RGB", r.image.size, (10, 200, 10)) for r in requests]


class SlowPlugin:
    @hookimpl
    def register_synthesizers(self, register):
        register("slow", CooperativeSlow)


async def test_an_over_long_job_fails_alone_and_its_call_stops_at_the_deadline(aiohttp_client, config_for):
    registry = get_registry([SlowPlugin()])
    cfg = config_for(synthesizer="slow", job_timeout_s=0.3, max_hung_calls=1)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    slow = await submit(client, "slow-1", description="a slow job")
    job = await wait_for_state(client, slow)
    assert job["state"] == "failed" and "timed out" in job["error"]
    # the abandoned call stopped by itself at its deadline: nothing keeps running, the worker takes jobs
    after = await submit(client, "after-slow")
    assert (await wait_for_state(client, after))["state"] == "done"
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["workers"][0]["abandoned_calls"] == 0


async def test_a_call_that_ignores_the_deadline_never_makes_the_server_unavailable(aiohttp_client, config_for,
                                                                                  control):
    registry = get_registry([ControlledPlugin(control)])
    cfg = config_for(synthesizer="controlled", job_timeout_s=0.2, max_hung_calls=1)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    hung = await submit(client, "hang-x", description="hang")
    assert (await wait_for_state(client, hung))["state"] == "failed"
    resp = await client.get("/healthz")
    health = await resp.json()
    assert resp.status == 200 and health["status"] == "ok"
    assert health["workers"][0]["state"] == "draining" and health["workers"][0]["abandoned_calls"] == 1
    # others' submissions are still taken (queued), not 503 for everyone
    queued = await submit(client, "while-draining")
    control.release.set()  # the hung call returns: the worker takes jobs again
    assert (await wait_for_state(client, queued))["state"] == "done"
    health = await (await client.get("/healthz")).json()
    assert health["workers"][0]["abandoned_calls"] == 0 and health["workers"][0]["state"] in ("ready", "busy")


# ----------------------------------------------------------------------------- small ones


async def test_the_queue_limit_holds_under_concurrent_submissions(aiohttp_client, config_for, control):
    registry = get_registry([ControlledPlugin(control)])
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled", queue_size=5), registry=registry))
    control.gate.clear()
    try:
        await submit(client, "occupy")  # the worker holds this one at the gate
        await wait_until(lambda: len(control.calls) == 1)
        answers = await asyncio.gather(*(client.post("/v1/jobs", json=job_body(f"c-{i}")) for i in range(40)))
        statuses = [r.status for r in answers]
        assert statuses.count(201) == 5 and statuses.count(429) == 35
        body = await (await client.get("/v1/jobs", params={"state": "queued", "limit": "500"})).json()
        assert len(body["jobs"]) == 5
    finally:
        control.gate.set()  # even when an assertion failed: the held call returns, the server stops


@pytest.mark.parametrize("key", ["abc\n", "abc\r\n", "ok-key\n"])
async def test_a_key_with_a_trailing_newline_is_refused(aiohttp_client, config_for, key):
    client = await aiohttp_client(create_app(config_for()))
    resp = await client.post("/v1/jobs", json=job_body(key))
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_key"
    listed = await client.get("/v1/jobs", params={"key": key})
    assert listed.status == 422


async def test_a_list_query_takes_500_ids_in_a_post_body_and_refuses_more_in_json(aiohttp_client, config_for):
    client = await aiohttp_client(create_app(config_for()))
    job_id = await submit(client, "listed")
    ids = [job_id] + [f"{i:032x}" for i in range(499)]
    resp = await client.post("/v1/jobs/query", json={"ids": ids, "limit": 500})
    assert resp.status == 200
    assert [j["id"] for j in (await resp.json())["jobs"]] == [job_id]
    too_many = await client.post("/v1/jobs/query", json={"ids": ids + [f"{1:032x}"]})
    assert too_many.status == 400 and "at most 500 ids" in (await too_many.json())["error"]["message"]
    bad = await client.post("/v1/jobs/query", json={"ids": "nope"})
    assert bad.status == 422 and (await bad.json())["error"]["code"] == "invalid_request"
