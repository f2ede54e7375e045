"""Transports: the ``aiohttp`` client against real servers on 127.0.0.1, and ``inprocess``, same behaviour.

The servers run on the test's event loop; the transports are synchronous (the trainer's side),
so the tests call them through ``asyncio.to_thread`` to keep the servers answering meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time

import numpy as np
import pytest
from PIL import Image

from syngrpo.plugins import get_registry
from syngrpo.synthesis.server.app import SERVICE, create_app
from syngrpo.synthesis.transport import JobRejected, Transport, TransportError

from .support import ControlledPlugin, make_job, scene, wait_until


def url_of(server) -> str:
    return str(server.make_url("")).rstrip("/")


def free_port_url() -> str:
    """A URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def transports():
    made = []

    def make(name: str, **options):
        t = get_registry().create("transports", name, **options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def labelled_pixels_kept(png: bytes) -> bool:
    original, boxes, _ = scene()
    result = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    orig = np.asarray(original)
    return all(np.array_equal(orig[int(b[1]):int(b[3]), int(b[0]):int(b[2])],
                              result[int(b[1]):int(b[3]), int(b[0]):int(b[2])]) for b in boxes)


async def test_the_aiohttp_transport_spreads_jobs_over_two_servers_and_gets_every_result(
        aiohttp_server, config_for, transports):
    s1 = await aiohttp_server(create_app(config_for()))
    s2 = await aiohttp_server(create_app(config_for()))
    t = transports("aiohttp", urls=[url_of(s1), url_of(s2)], poll_interval_s=0.05)
    assert isinstance(t, Transport)
    keys = [await asyncio.to_thread(t.submit, make_job(f"spread-{i}", seed=i)) for i in range(6)]
    results = await asyncio.to_thread(t.wait, keys, 20)
    assert sorted(r.key for r in results) == sorted(keys)
    assert all(r.state == "done" and labelled_pixels_kept(r.image_png) for r in results)
    per_server = [s.app[SERVICE].store.count_by_state()["done"] for s in (s1, s2)]
    assert sum(per_server) == 6 and min(per_server) >= 2
    assert {r.server for r in results} == {url_of(s1), url_of(s2)}
    assert t.pending() == 0 and t.poll() == []


async def test_a_full_server_answers_429_and_the_client_waits_retry_after_then_gets_in(
        aiohttp_server, config_for, registry, transports):
    cfg = config_for(synthesizer="controlled", synthesizer_options={"delay_s": 0.4}, queue_size=1)
    server = await aiohttp_server(create_app(cfg, registry=registry))
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05)
    await asyncio.to_thread(t.submit, make_job("busy-0"))
    service = server.app[SERVICE]
    await wait_until(lambda: service.store.count_by_state()["running"] == 1)
    await asyncio.to_thread(t.submit, make_job("busy-1"))  # fills the queue
    started = time.monotonic()
    await asyncio.to_thread(t.submit, make_job("busy-2"))  # 429, Retry-After: 1, then accepted
    waited = time.monotonic() - started
    assert service.rejected >= 1
    assert waited >= 0.9  # it honoured Retry-After instead of hammering
    results = await asyncio.to_thread(t.wait, ["busy-0", "busy-1", "busy-2"], 20)
    assert [r.state for r in results] == ["done"] * 3


async def test_a_dead_server_is_skipped_and_all_dead_is_a_transport_error(aiohttp_server, config_for, transports):
    live = await aiohttp_server(create_app(config_for()))
    t = transports("aiohttp", urls=[free_port_url(), url_of(live)], poll_interval_s=0.05, backoff_s=0.01)
    keys = [await asyncio.to_thread(t.submit, make_job(f"d-{i}")) for i in range(3)]
    assert [r.state for r in await asyncio.to_thread(t.wait, keys, 20)] == ["done"] * 3
    assert await asyncio.to_thread(t.healthy)

    dead = transports("aiohttp", urls=[free_port_url()], retries=2, backoff_s=0.01, connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(TransportError, match="no data server took job 'lost' after 2 retries"):
        await asyncio.to_thread(dead.submit, make_job("lost"))
    assert time.monotonic() - started < 5
    assert not await asyncio.to_thread(dead.healthy)


async def test_the_bearer_token_is_sent_and_a_missing_one_is_refused(aiohttp_server, config_for, transports):
    server = await aiohttp_server(create_app(config_for(token="token-1234")))
    good = transports("aiohttp", urls=[url_of(server)], token="token-1234", poll_interval_s=0.05)
    key = await asyncio.to_thread(good.submit, make_job("tok-1"))
    assert (await asyncio.to_thread(good.wait, [key], 10))[0].state == "done"
    bad = transports("aiohttp", urls=[url_of(server)], token=None)
    with pytest.raises(TransportError, match="401 unauthorized"):
        await asyncio.to_thread(bad.submit, make_job("tok-2"))


async def test_poll_returns_at_once_while_jobs_are_still_running(aiohttp_server, config_for, registry, control,
                                                                 transports):
    server = await aiohttp_server(create_app(config_for(synthesizer="controlled"), registry=registry))
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05)
    control.gate.clear()
    await asyncio.to_thread(t.submit, make_job("slow"))
    started = time.monotonic()
    assert t.poll() == []  # called on the server's own loop: it must not need it
    assert time.monotonic() - started < 0.05
    assert t.pending() == 1
    control.gate.set()
    assert (await asyncio.to_thread(t.wait, ["slow"], 10))[0].state == "done"


# ------------------------------------------------------------- the same behaviour through both transports


@pytest.fixture(params=["aiohttp", "inprocess"])
async def transport_with(request, aiohttp_server, config_for, transports, control):
    """``make(**server_config)``: a transport of either kind over a server with those settings."""

    async def make(**keys):
        registry = get_registry([ControlledPlugin(control)])
        if request.param == "inprocess":
            return transports("inprocess", registry=registry, data_dir=config_for().data_dir, **keys)
        server = await aiohttp_server(create_app(config_for(**keys), registry=registry))
        return transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05)

    return make


async def test_both_transports_deliver_done_results_with_the_labelled_pixels_kept(transport_with):
    t = await transport_with()
    keys = [await asyncio.to_thread(t.submit, make_job(f"same-{i}", seed=i)) for i in range(3)]
    results = await asyncio.to_thread(t.wait, keys, 20)
    assert [r.key for r in results] == keys
    assert all(r.state == "done" and r.error is None and labelled_pixels_kept(r.image_png) for r in results)
    assert await asyncio.to_thread(t.poll) == []  # each result is handed over once
    assert t.pending() == 0 and await asyncio.to_thread(t.healthy)


async def test_both_transports_report_a_failed_job_with_its_reason(transport_with):
    t = await transport_with(synthesizer="controlled")
    key = await asyncio.to_thread(t.submit, make_job("doomed", description="boom"))
    (result,) = await asyncio.to_thread(t.wait, [key], 10)
    assert result.state == "failed" and result.image_png is None and "boom requested" in result.error


async def test_both_transports_make_a_resubmitted_key_one_job(transport_with):
    t = await transport_with()
    job = make_job("twice")
    await asyncio.to_thread(t.submit, job)
    await asyncio.to_thread(t.submit, job)
    results = await asyncio.to_thread(t.wait, ["twice"], 10)
    await asyncio.sleep(0.2)
    assert len(results) == 1 and results[0].state == "done"
    assert await asyncio.to_thread(t.poll) == []


async def test_both_transports_refuse_a_bad_job_with_the_servers_reason(transport_with):
    t = await transport_with()
    bad = make_job("bad-box", boxes=[(50.0, 10.0, 20.0, 30.0), (1.0, 1.0, 5.0, 5.0)])
    with pytest.raises(JobRejected, match="invalid_boxes"):  # a TransportError about this job alone
        await asyncio.to_thread(t.submit, bad)
    assert t.pending() == 0


async def test_both_transports_poll_results_as_jobs_finish(transport_with):
    t = await transport_with()
    await asyncio.to_thread(t.submit, make_job("p-1"))
    got = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = await asyncio.to_thread(t.poll)
        await asyncio.sleep(0.02)
    assert [(r.key, r.state) for r in got] == [("p-1", "done")]


async def test_both_transports_wait_out_a_full_queue_or_refuse_at_once_when_told(transport_with, control):
    t = await transport_with(synthesizer="controlled", queue_size=1)
    control.gate.clear()
    await asyncio.to_thread(t.submit, make_job("full-0"))
    await wait_until(lambda: len(control.calls) == 1)  # full-0 is running
    await asyncio.to_thread(t.submit, make_job("full-1"))  # the queue is full now
    t.submit_timeout_s = 0
    with pytest.raises(TransportError, match="queue_full|full"):
        await asyncio.to_thread(t.submit, make_job("full-2"))
    t.submit_timeout_s = 10
    asyncio.get_running_loop().call_later(0.3, control.gate.set)
    started = time.monotonic()
    await asyncio.to_thread(t.submit, make_job("full-3"))
    assert time.monotonic() - started >= 0.9  # waited for Retry-After, then got in
    results = await asyncio.to_thread(t.wait, ["full-0", "full-1", "full-3"], 20)
    assert [r.state for r in results] == ["done"] * 3


async def test_fire_and_forget_submission_returns_before_the_server_answers_and_gets_the_result(
        aiohttp_server, config_for, registry, control, transports):
    server = await aiohttp_server(create_app(config_for(synthesizer="controlled"), registry=registry))
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05)
    control.gate.clear()
    assert t.submit_nowait(make_job("nw-1")) == "nw-1"  # on the server's own loop: it cannot have answered
    assert t.pending() == 1
    assert t.submit_nowait(make_job("nw-1")) == "nw-1"  # the same key again: nothing new is sent
    control.gate.set()
    results = await asyncio.to_thread(t.wait, ["nw-1"], 10)
    assert [(r.key, r.state, r.refused) for r in results] == [("nw-1", "done", False)]
    assert server.app[SERVICE].store.count_by_state()["done"] == 1  # one job, not two
    assert t.pending() == 0


async def test_a_fire_and_forget_job_no_server_takes_comes_back_refused_and_the_next_submit_raises(transports):
    t = transports("aiohttp", urls=[free_port_url()], retries=0, backoff_s=0.01, connect_timeout_s=1,
                   poll_interval_s=0.05)
    t.submit_nowait(make_job("gone-1"))  # returns: nobody has tried the server yet
    results = await asyncio.to_thread(t.wait, ["gone-1"], 10)
    assert [(r.key, r.state, r.refused) for r in results] == [("gone-1", "failed", True)]
    assert "not submitted" in results[0].error and "no data server took job 'gone-1'" in results[0].error
    with pytest.raises(TransportError):  # the outage is reported to the next submission, at once
        t.submit_nowait(make_job("gone-2"))
    assert t.pending() == 0  # nothing is left waiting for a result that cannot come


async def test_a_fire_and_forget_job_the_server_rejects_fails_alone(aiohttp_server, config_for, transports):
    server = await aiohttp_server(create_app(config_for()))
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05)
    t.submit_nowait(make_job("nw-bad", boxes=[(50.0, 10.0, 20.0, 30.0), (1.0, 1.0, 5.0, 5.0)]))
    results = await asyncio.to_thread(t.wait, ["nw-bad"], 10)
    assert [(r.state, r.refused) for r in results] == [("failed", False)]
    assert "invalid_boxes" in results[0].error
    t.submit_nowait(make_job("nw-good"))  # a rejected job says nothing about the servers: no error here
    assert [r.state for r in await asyncio.to_thread(t.wait, ["nw-good"], 10)] == ["done"]


async def test_a_server_that_answers_its_health_check_is_not_cooled_down_any_more(aiohttp_server, config_for,
                                                                                 transports):
    """After an outage the trainer probes health, then submits fire-and-forget at once: that must go out."""
    server = await aiohttp_server(create_app(config_for()))
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05, cooldown_s=60)
    t._servers[0].failures, t._servers[0].down_until = 3, time.monotonic() + 180  # as after failed submissions
    with pytest.raises(TransportError, match="cooling down"):
        t.submit_nowait(make_job("cool-1"))
    assert await asyncio.to_thread(t.healthy)
    t.submit_nowait(make_job("cool-2"))
    assert [r.state for r in await asyncio.to_thread(t.wait, ["cool-2"], 10)] == ["done"]


# ------------------------------------------------------------- deleting what the trainer collected


def _store_of(server_or_transport):
    app = getattr(server_or_transport, "app", None)
    return (app[SERVICE] if app is not None else server_or_transport.service).store


def _jobs_on_disk(store) -> list[str]:
    return sorted(p.name for p in store.jobs_dir.iterdir())


async def test_both_transports_delete_collected_jobs_on_their_server_rows_and_files(transport_with):
    t = await transport_with()
    keys = [await asyncio.to_thread(t.submit, make_job(f"del-{i}", seed=i)) for i in range(3)]
    results = await asyncio.to_thread(t.wait, keys, 20)
    assert all(r.state == "done" and r.job_id for r in results)
    store = t.service.store if hasattr(t, "service") else None
    t.delete(results[:2])
    if store is None:  # aiohttp: sent from the transport's thread, within a poll interval
        await wait_until(lambda: t.stats()["deletes_pending"] == 0, timeout=10)
    else:
        assert [r.key for r in store.list()] == ["del-2"]
        assert _jobs_on_disk(store) == [results[2].job_id]
    t.delete(results[:2])  # again: nothing happens, nothing raises
    if store is None:
        await wait_until(lambda: t.stats()["deletes_pending"] == 0, timeout=10)
    assert isinstance(t, Transport)


async def test_the_aiohttp_transport_deletes_on_the_server_that_ran_each_job(aiohttp_server, config_for,
                                                                             transports):
    s1 = await aiohttp_server(create_app(config_for()))
    s2 = await aiohttp_server(create_app(config_for()))
    t = transports("aiohttp", urls=[url_of(s1), url_of(s2)], poll_interval_s=0.05)
    keys = [await asyncio.to_thread(t.submit, make_job(f"two-{i}", seed=i)) for i in range(4)]
    results = await asyncio.to_thread(t.wait, keys, 20)
    assert {r.server for r in results} == {url_of(s1), url_of(s2)}
    t.delete(results)
    await wait_until(lambda: all(_store_of(s).job_count() == 0 for s in (s1, s2)), timeout=10)
    await wait_until(lambda: all(_jobs_on_disk(_store_of(s)) == [] for s in (s1, s2)), timeout=10)
    await wait_until(lambda: t.stats()["deletes_pending"] == 0, timeout=10)


async def test_a_delete_for_a_server_that_is_down_is_sent_when_it_answers_again(aiohttp_server, config_for,
                                                                                transports):
    cfg = config_for()
    server = await aiohttp_server(create_app(cfg))
    port = server.port
    t = transports("aiohttp", urls=[url_of(server)], poll_interval_s=0.05, connect_timeout_s=1)
    key = await asyncio.to_thread(t.submit, make_job("later-1"))
    (result,) = await asyncio.to_thread(t.wait, [key], 10)
    await server.close()  # the server goes away (its store is closed, its files stay)
    started = time.monotonic()
    t.delete([result])  # returns at once and never raises: the server is down
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.3)
    assert t.stats()["deletes_pending"] == 1
    back = await aiohttp_server(create_app(cfg), port=port)  # the same server, restarted on its port
    await wait_until(lambda: t.stats()["deletes_pending"] == 0, timeout=15)
    assert _store_of(back).job_count() == 0 and _jobs_on_disk(_store_of(back)) == []


def test_closing_with_deletions_for_a_server_that_never_answers_takes_seconds_not_minutes(transports):
    from syngrpo.synthesis.transport import SynthesisResult

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t = transports("aiohttp", urls=[url], poll_interval_s=60, request_timeout_s=600)
        t.delete([SynthesisResult("k-1", "done", server=url, job_id="a" * 32)])
        assert t.stats()["deletes_pending"] == 1
        started = time.monotonic()
        t.close()
        assert time.monotonic() - started < 5


async def test_both_transports_report_a_cancelled_job_as_cancelled_now_that_cancelling_deletes_it(transport_with,
                                                                                                  control):
    t = await transport_with(synthesizer="controlled")
    control.gate.clear()
    try:
        await asyncio.to_thread(t.submit, make_job("holds-the-worker"))
        await wait_until(lambda: len(control.calls) == 1)
        key = await asyncio.to_thread(t.submit, make_job("to-cancel", description="cancel me"))
        await asyncio.to_thread(t.cancel, key)
        result = (await asyncio.to_thread(t.wait, [key], 10))[0]
    finally:
        control.gate.set()
    assert result.state == "cancelled", result  # not "failed: the server no longer knows job ..."


def test_a_spawned_server_with_a_token_is_seen_ready(tmp_path):
    from syngrpo.synthesis.server.spawn import start_server_subprocess

    token = "spawned-server-token-0123456789"
    with start_server_subprocess(data_dir=tmp_path / "store", token=token, wait_ready=True,
                                 startup_timeout_s=60) as handle:
        assert handle.alive()
