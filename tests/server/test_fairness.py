"""Issue 24 item 3: one client's work never delays another's beyond its share.

Clients are told apart by address; on loopback every 127.x.y.z is this machine, so each test client
connects from its own (127.0.0.2, 127.0.0.3, ...).  The synthesizer is the test's ``controlled`` one,
held at a gate, so the order in which the single worker takes jobs is exact (``control.calls``).
"""

from __future__ import annotations

import aiohttp
import pytest

from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.fairness import FairShare

from .support import job_body, wait_for_state, wait_until


def session_from(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def post(session, url: str, key: str, **changes) -> aiohttp.ClientResponse:
    resp = await session.post(url + "/v1/jobs", json=job_body(key, **changes))
    await resp.read()
    return resp


async def test_a_clients_single_job_runs_next_not_after_another_clients_whole_backlog(aiohttp_client, config_for,
                                                                                      registry, control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled"), registry=registry))
    url = f"http://127.0.0.1:{client.server.port}"
    control.gate.clear()
    try:
        async with session_from("127.0.0.2") as flood, session_from("127.0.0.3") as innocent:
            for i in range(6):
                assert (await post(flood, url, f"flood-{i}", description=f"flood {i}")).status == 201
            await wait_until(lambda: len(control.calls) == 1)  # flood 0 runs; flood 1-5 wait
            resp = await post(innocent, url, "innocent", description="innocent 0")
            assert resp.status == 201
            innocent_id = (await resp.json())["id"]
            control.gate.set()
            job = await wait_for_state(client, innocent_id)
            assert job["state"] == "done"
    finally:
        control.gate.set()
    order = [c[2][0] for c in control.calls]
    # first come, first served ran it 7th, after the whole backlog; now it runs as soon as the worker is free
    assert order[:2] == ["flood 0", "innocent 0"], order


async def test_two_busy_clients_take_turns_on_the_worker(aiohttp_client, config_for, registry, control):
    cfg = config_for(synthesizer="controlled", synthesizer_options={"delay_s": 0.05})  # jobs of ~equal cost
    client = await aiohttp_client(create_app(cfg, registry=registry))
    url = f"http://127.0.0.1:{client.server.port}"
    control.gate.clear()
    try:
        async with session_from("127.0.0.2") as a, session_from("127.0.0.3") as b, session_from("127.0.0.4") as c:
            assert (await post(c, url, "c-hold", description="c hold")).status == 201
            await wait_until(lambda: len(control.calls) == 1)  # a third client holds the worker meanwhile
            for i in range(4):
                assert (await post(a, url, f"a-{i}", description=f"a {i}")).status == 201
            for i in range(4):
                assert (await post(b, url, f"b-{i}", description=f"b {i}")).status == 201
            control.gate.set()
            await wait_until(lambda: len(control.calls) == 9, timeout=20)
    finally:
        control.gate.set()
    order = [c[2][0][0] for c in control.calls[1:]]
    # first come, first served: a a a a b b b b; shared: they take turns as each one's worker-seconds grow
    # (within a job or so: a job's run time varies on a loaded machine)
    gaps = [abs(order[:n].count("a") - order[:n].count("b")) for n in range(1, len(order) + 1)]
    assert max(gaps) <= 2, order


async def test_a_client_that_filled_the_queue_does_not_keep_another_out(aiohttp_client, config_for, registry,
                                                                       control):
    cfg = config_for(synthesizer="controlled", queue_size=4, client_queue_share=0.5)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    url = f"http://127.0.0.1:{client.server.port}"
    control.gate.clear()
    try:
        async with session_from("127.0.0.2") as flood, session_from("127.0.0.3") as innocent:
            assert (await post(flood, url, "hold")).status == 201
            await wait_until(lambda: len(control.calls) == 1)
            statuses = [(await post(flood, url, f"flood-{i}")).status for i in range(6)]
            assert statuses == [201] * 4 + [429] * 2  # alone, it may fill the whole queue
            resp = await post(innocent, url, "innocent-0")
            assert resp.status == 201, await resp.text()  # its share (2 of 4) is kept for it in a full queue
            assert (await post(innocent, url, "innocent-1")).status == 201
            third = await post(innocent, url, "innocent-2")
            assert third.status == 429
            assert "2 of them this client's" in (await third.json())["error"]["message"]
            assert (await post(flood, url, "flood-again")).status == 429
    finally:
        control.gate.set()


def test_worker_seconds_halve_every_half_life_so_old_work_is_forgiven():
    now = [1000.0]
    fair = FairShare(half_life_s=10.0, clock=lambda: now[0])
    fair.charge("a", 8.0)
    assert fair.usage("a") == pytest.approx(8.0) and fair.usage("b") == 0.0
    now[0] += 10.0
    assert fair.usage("a") == pytest.approx(4.0)
    fair.charge("a", 1.0)
    now[0] += 20.0
    assert fair.usage("a") == pytest.approx(5.0 / 4)


async def test_fifo_scheduling_keeps_first_come_first_served_for_those_who_want_it(aiohttp_client, config_for,
                                                                                  registry, control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled", scheduling="fifo"),
                                             registry=registry))
    url = f"http://127.0.0.1:{client.server.port}"
    control.gate.clear()
    try:
        async with session_from("127.0.0.2") as flood, session_from("127.0.0.3") as other:
            for i in range(3):
                assert (await post(flood, url, f"f-{i}", description=f"flood {i}")).status == 201
            await wait_until(lambda: len(control.calls) == 1)
            assert (await post(other, url, "o-0", description="other 0")).status == 201
            control.gate.set()
            await wait_until(lambda: len(control.calls) == 4)
    finally:
        control.gate.set()
    assert [c[2][0] for c in control.calls] == ["flood 0", "flood 1", "flood 2", "other 0"]


async def test_a_client_with_many_requests_in_progress_waits_its_turn_and_others_do_not(aiohttp_client, config_for):
    import asyncio
    import json
    import socket

    from .test_hostile_bodies import partial_post

    cfg = config_for(client_concurrency=2, client_waiting=1, body_timeout_s=30)
    client = await aiohttp_client(create_app(cfg))
    port = client.server.port
    body = json.dumps(job_body("stalled")).encode()
    stalled = [partial_post(port, body, 10, source="127.0.0.2") for _ in range(3)]  # 2 handled, 1 waiting
    try:
        await asyncio.sleep(0.3)
        url = f"http://127.0.0.1:{port}"
        async with session_from("127.0.0.2") as same, session_from("127.0.0.3") as other:
            resp = await same.get(url + "/v1/jobs")  # one more than it may have: refused at once
            assert resp.status == 429 and (await resp.json())["error"]["code"] == "client_busy"
            assert "client_concurrency" in (await resp.json())["error"]["message"]
            t0 = asyncio.get_running_loop().time()
            resp = await other.get(url + "/v1/jobs")
            assert resp.status == 200 and asyncio.get_running_loop().time() - t0 < 2
        metrics = await (await client.get("/metrics")).text()
        assert "syngrpo_requests_waiting 1" in metrics
    finally:
        for s in stalled:
            s.shutdown(socket.SHUT_RDWR)
            s.close()
