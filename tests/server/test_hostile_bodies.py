"""Issue 24 items 1 and 2: small requests cannot exhaust memory or disk, slow bodies cannot deny service.

Item 1 (decoded sizes): a gzip body counts what it inflates to; every string in a job's options is
bounded; a listing is bounded whatever the jobs hold; the disk budget counts what a job's result can
take, not its (tiny, compressible) input; cancelling frees the row and the files.
Item 2 (slow bodies): bodies count against the budget as they arrive, so connections that announce
32 MiB and stall hold nothing; each client holds at most its share; a body must arrive within
``body_timeout_s``.

A real server on 127.0.0.1 over a real store; stalled and compressed requests are written on raw
sockets, from several loopback addresses (127.0.0.2, ...: each its own client).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket

from PIL import Image

from syngrpo.synthesis.server.app import create_app

from .support import b64, job_body, png_bytes, scene, wait_for_state, wait_until
from .test_api import prometheus


def partial_post(port: int, body: bytes, sent: int, *, source: str = "127.0.0.1",
                 headers: tuple[str, ...] = ()) -> socket.socket:
    """A POST /v1/jobs announcing ``len(body)`` bytes that sends only the first ``sent`` of them and stalls."""
    s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    head = ("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n")
    s.sendall(head.encode() + body[:sent])
    return s


async def metric(client, name: str) -> float:
    return prometheus(await (await client.get("/metrics")).text())[name]


def from_address(source: str):
    """An aiohttp session whose connections come from ``source`` (a client of its own to the server)."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


# ----------------------------------------------------------------------------- item 1: decoded sizes


async def test_a_gzip_body_counts_what_it_inflates_to_against_the_shared_body_budget(aiohttp_client, config_for):
    mib = 1024 * 1024
    cfg = config_for(max_request_bytes=mib, max_body_bytes_in_flight=mib, client_body_bytes_in_flight=mib)
    client = await aiohttp_client(create_app(cfg))
    port = client.server.port
    # 900 KB of JSON that gzip makes ~1 KB of: the budget must see 900 KB, not the announced 1 KB
    inflated = json.dumps(job_body("bomb", description="d" * 200, options={"pad": "p" * 900_000})).encode()
    packed = gzip.compress(inflated)
    assert len(packed) < 5000
    stalled = partial_post(port, packed + b"\x00" * 16, len(packed), source="127.0.0.2",
                           headers=("Content-Encoding: gzip",))  # all of the gzip member sent; more announced
    try:
        held = 0.0
        for _ in range(200):
            held = await metric(client, "syngrpo_request_body_bytes_in_flight")
            if held >= 800_000:
                break
            await asyncio.sleep(0.02)
        assert held >= 800_000, held  # the inflated size is what is held (memory), not 5 KB
        # so another client's 300 KB body does not fit beside it: refused at once, not another 900 KB in memory
        async with from_address("127.0.0.3") as other:
            body = job_body("beside", description="x" * 10, options={"pad": "q" * 300_000})
            resp = await other.post(f"http://127.0.0.1:{port}/v1/jobs", json=body)
            assert resp.status == 503 and (await resp.json())["error"]["code"] == "busy"
    finally:
        stalled.close()
    await asyncio.sleep(0.2)
    assert await metric(client, "syngrpo_request_body_bytes_in_flight") == 0
    assert (await client.post("/v1/jobs", json=job_body("after"))).status == 201


async def test_a_gzip_body_that_inflates_past_the_request_limit_is_413_naming_the_encoding(aiohttp_client,
                                                                                          config_for):
    client = await aiohttp_client(create_app(config_for(max_request_bytes=64 * 1024)))
    packed = gzip.compress(json.dumps(job_body("big", options={"pad": "z" * 2_000_000})).encode())
    resp = await client.post("/v1/jobs", data=packed, headers={"Content-Type": "application/json",
                                                               "Content-Encoding": "gzip"})
    assert resp.status == 413
    err = (await resp.json())["error"]
    assert err["code"] == "request_too_large" and "inflated (gzip)" in err["message"]


async def test_every_string_in_a_jobs_options_is_bounded_as_long_distractor_classes_were_not(aiohttp_client,
                                                                                           config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    long_classes = {"distractor_classes": ["red circle " + "x" * 50_000] * 4}  # inside the old 32-item bound
    resp = await client.post("/v1/jobs", json=job_body("long-classes", options=long_classes))
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_options" and "options.distractor_classes.0" in err["message"]
    assert "max_description_chars" in err["message"]
    many = {"distractor_classes": [f"blue square {i}" for i in range(32)], "pad": ["y" * 900] * 30}
    resp = await client.post("/v1/jobs", json=job_body("many-strings", options=many))
    assert resp.status == 422 and "max_options_bytes" in (await resp.json())["error"]["message"]
    ok = await client.post("/v1/jobs", json=job_body("short-classes",
                                                     options={"distractor_classes": ["green star"]}))
    assert ok.status == 201, await ok.text()
    assert (await (await client.get("/v1/jobs")).json())["jobs"][0]["key"] == "short-classes"  # nothing else stored


async def test_a_listing_is_bounded_whatever_the_jobs_hold_and_pages_reach_every_job(aiohttp_client, config_for):
    cfg = config_for(max_list_bytes=16 * 1024, queue_size=64)
    client = await aiohttp_client(create_app(cfg))
    big = job_body("x", description="a wide " + "v" * 990)["description"]
    ids = []
    for i in range(12):  # twelve jobs with the largest fields the server takes
        resp = await client.post("/v1/jobs", json=job_body(f"big-{i}", description=big,
                                                           options={"clutter": 3, "tones": "muted"}))
        assert resp.status == 201
        ids.append((await resp.json())["id"])
    seen, after, pages = [], 0, 0
    while True:
        resp = await client.get("/v1/jobs", params={"limit": "500", "after": str(after)})
        raw = await resp.read()
        assert len(raw) <= cfg.max_list_bytes + 200, len(raw)
        page = json.loads(raw)
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ids and pages > 1


def one_colour_png(size: int) -> bytes:
    image = Image.new("RGB", (size, size), (200, 200, 200))
    image.paste(scene()[0], (0, 0))
    return png_bytes(image)


async def test_the_disk_budget_counts_what_a_result_can_take_not_the_tiny_input(aiohttp_client, config_for):
    size = 640  # a one-colour input is a few kB of PNG; a repainted result of noise is ~1.2 MB
    cfg = config_for(max_store_bytes=4 * 1024 * 1024, queue_size=64)
    client = await aiohttp_client(create_app(cfg))
    image = b64(one_colour_png(size))
    accepted = []
    for i in range(12):
        resp = await client.post("/v1/jobs", json=job_body(f"tiny-in-{i}", image=image, seed=i,
                                                           description="grainy grey noise"))
        if resp.status == 201:
            accepted.append((await resp.json())["id"])
        else:
            assert resp.status == 429 and (await resp.json())["error"]["code"] == "store_full"
    assert 1 <= len(accepted) < 12
    for job_id in accepted:
        assert (await wait_for_state(client, job_id, timeout=60))["state"] == "done"
    used = await metric(client, "syngrpo_store_bytes")
    assert used <= cfg.max_store_bytes, (used, len(accepted))


async def test_cancelling_a_queued_job_frees_its_row_and_files_at_once(aiohttp_client, config_for, registry, control):
    cfg = config_for(synthesizer="controlled")
    client = await aiohttp_client(create_app(cfg, registry=registry))
    control.gate.clear()
    try:
        running = (await (await client.post("/v1/jobs", json=job_body("hold"))).json())["id"]
        await wait_until(lambda: len(control.calls) == 1)
        queued = (await (await client.post("/v1/jobs", json=job_body("to-cancel"))).json())["id"]
        assert (cfg.data_dir / "jobs" / queued / "input.png").is_file()
        resp = await client.post(f"/v1/jobs/{queued}/cancel")
        assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
        assert not (cfg.data_dir / "jobs" / queued).exists()  # the files went with the cancel
        gone = await client.get(f"/v1/jobs/{queued}")
        assert gone.status == 410 and (await gone.json())["error"]["code"] == "deleted"
        listed = await (await client.get("/v1/jobs", params={"ids": f"{queued},{running}"})).json()
        assert [j["id"] for j in listed["jobs"]] == [running]
        assert listed["deleted"][0]["id"] == queued and listed["deleted"][0]["final_state"] == "cancelled"
        assert await metric(client, "syngrpo_store_jobs") == 1
        # a running job is cancelled when its call returns, then deleted too
        resp = await client.post(f"/v1/jobs/{running}/cancel")
        assert resp.status == 200 and (await resp.json())["cancel_requested"] is True
    finally:
        control.gate.set()
    for _ in range(300):
        if (await client.get(f"/v1/jobs/{running}")).status == 410:
            break
        await asyncio.sleep(0.02)
    assert (await client.get(f"/v1/jobs/{running}")).status == 410
    assert list((cfg.data_dir / "jobs").iterdir()) == []


# ----------------------------------------------------------------------------- item 2: slow bodies


async def test_four_stalled_connections_announcing_32_mib_each_no_longer_deny_every_post(aiohttp_client, config_for):
    cfg = config_for(max_request_bytes=256 * 1024, max_body_bytes_in_flight=1024 * 1024)  # 4 x 256 KiB: the cap
    client = await aiohttp_client(create_app(cfg))
    port = client.server.port
    stalled = [partial_post(port, b"{" + b" " * (256 * 1024 - 1), 10, source=f"127.0.0.{2 + i}") for i in range(4)]
    try:
        await asyncio.sleep(0.3)
        resp = await client.post("/v1/jobs", json=job_body("innocent"))
        assert resp.status == 201, await resp.text()  # was 503 busy for everyone for 30 s, renewable
        assert await metric(client, "syngrpo_request_body_bytes_in_flight") <= 4 * 10
    finally:
        for s in stalled:
            s.close()


async def test_a_body_that_has_not_arrived_within_body_timeout_gets_408_and_frees_what_it_held(aiohttp_client,
                                                                                            config_for):
    cfg = config_for(body_timeout_s=0.5, read_timeout_s=30)
    client = await aiohttp_client(create_app(cfg))
    body = json.dumps(job_body("slow")).encode()
    s = partial_post(client.server.port, body, len(body) // 2)
    try:
        loop = asyncio.get_running_loop()
        s.settimeout(5)
        answer = await loop.run_in_executor(None, s.recv, 65536)
    finally:
        s.close()
    assert b" 408 " in answer.split(b"\r\n")[0] and b"body_timeout_s" in answer
    assert await metric(client, "syngrpo_request_body_bytes_in_flight") == 0


async def test_one_client_holds_at_most_its_share_of_the_body_budget_and_others_still_get_in(aiohttp_client,
                                                                                          config_for):
    cfg = config_for(max_request_bytes=128 * 1024, max_body_bytes_in_flight=512 * 1024,
                     client_body_bytes_in_flight=160 * 1024)
    client = await aiohttp_client(create_app(cfg))
    port = client.server.port
    body = b'{"key": "' + b"k" * (120 * 1024) + b'"}'
    first = partial_post(port, body, 100 * 1024, source="127.0.0.2")  # holds 100 KiB of its 160 KiB share
    second = partial_post(port, body, 100 * 1024, source="127.0.0.2")  # would make 200 KiB: refused
    try:
        second.settimeout(5)
        answer = await asyncio.get_running_loop().run_in_executor(None, second.recv, 65536)
        assert b" 429 " in answer.split(b"\r\n")[0] and b"client_busy" in answer, answer[:300]
        async with from_address("127.0.0.3") as other:  # another client is not affected
            resp = await other.post(f"http://127.0.0.1:{port}/v1/jobs", json=job_body("other-client"))
            assert resp.status == 201, await resp.text()
        assert await metric(client, "syngrpo_requests_client_busy_total") == 1
    finally:
        first.close()
        second.close()
