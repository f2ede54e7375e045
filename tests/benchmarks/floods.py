"""Clients for the data server's load and fairness benchmark (issue 24): an innocent client and its floods.

Each client connects from an address of its own (127.0.0.2, 127.0.0.3, ...; all of 127/8 is this
machine), which is how the server tells clients apart; the heavy flood is three clients (expensive
jobs, gzip bombs, stalled bodies), each of which would otherwise mostly hold up its own requests
(a client's requests take turns, ``client_concurrency``).

* :func:`innocent_round`: one small job at a time, as a trainer does: ``POST /v1/jobs`` (its
  request latency), then ``GET /v1/jobs/{id}`` every 10 ms until done (request latencies, and the
  job's turnaround: submission to done).
* :func:`cheap_flood`: many connections posting small valid jobs as fast as the server answers
  (429s included) and listing 500 jobs at a time.
* :func:`heavy_flood`: expensive jobs inside every limit (a one-colour PNG of a few kB whose
  repainting, with the most distractors and clutter the ``procedural`` options allow, takes a
  core for a second or more: the issue's "78 KB request costing 18.7 s" scaled down), gzip bombs
  (a few tens of kB inflating to ``bomb_bytes`` of JSON with long ``distractor_classes``), and
  stalled bodies announcing the largest body and trickling it.

Every flood stops when its ``stop`` event is set and reports what it sent and what came back.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gzip
import io
import json
import time
from dataclasses import dataclass, field

import aiohttp
from PIL import Image, ImageDraw

INNOCENT, CHEAP, HEAVY, BOMBS, STALLS = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.9"
BOXES = [[10.0, 12.0, 40.0, 42.0], [60.0, 20.0, 88.0, 48.0]]
LABELS = ["red circle", "blue square"]


def _png(size: int) -> bytes:
    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse(BOXES[0], fill=(220, 40, 40))
    draw.rectangle(BOXES[1], fill=(40, 80, 220))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


SMALL_PNG = base64.b64encode(_png(112)).decode()


def small_job(key: str) -> dict:
    return {"key": key, "image": SMALL_PNG, "boxes": BOXES, "labels": LABELS,
            "description": "a calm blue beach", "options": {"distractors": 1, "clutter": 0}, "seed": 0}


def heavy_job(key: str, size: int) -> dict:
    """A few kB to send, seconds of a core to draw: the most distractors and clutter, a noise texture."""
    return {"key": key, "image": base64.b64encode(_png(size)).decode(), "boxes": BOXES, "labels": LABELS,
            "description": "a busy cluttered grainy noise market", "options": {"distractors": 64, "clutter": 256},
            "seed": 0}


def gzip_bomb(bomb_bytes: int) -> bytes:
    """gzip of a job whose ``distractor_classes`` hold ``bomb_bytes`` of text (what issue 24 sent: 29 KB -> 29 MB)."""
    per = max(1, bomb_bytes // 32)
    job = small_job("bomb")
    job["options"] = {"distractor_classes": ["red circle " + "x" * per] * 32}
    return gzip.compress(json.dumps(job).encode(), compresslevel=9)


def session_from(source: str, limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=120))


@dataclass
class FloodStats:
    sent: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    keys: list[str] = field(default_factory=list)


@dataclass
class InnocentStats:
    post_s: list[float] = field(default_factory=list)
    get_s: list[float] = field(default_factory=list)
    turnaround_s: list[float] = field(default_factory=list)

    @property
    def request_s(self) -> list[float]:
        return self.post_s + self.get_s


async def innocent_round(url: str, n: int, tag: str, *, timeout_s: float = 300.0) -> InnocentStats:
    stats = InnocentStats()
    async with session_from(INNOCENT, limit=4) as s:
        for i in range(n):
            t0 = time.perf_counter()
            while True:  # a full server is retried as a client would (counts in the turnaround)
                tp = time.perf_counter()
                async with s.post(url + "/v1/jobs", json=small_job(f"innocent-{tag}-{i}")) as resp:
                    body = await resp.json()
                stats.post_s.append(time.perf_counter() - tp)
                if resp.status in (200, 201):
                    break
                assert resp.status in (429, 503), (resp.status, body)
                await asyncio.sleep(float(resp.headers.get("Retry-After", "0.1")) / 10)
            job_id = body["id"]
            while True:
                t1 = time.perf_counter()
                async with s.get(f"{url}/v1/jobs/{job_id}") as resp:
                    job = await resp.json()
                stats.get_s.append(time.perf_counter() - t1)
                if job["state"] in ("done", "failed", "cancelled"):
                    assert job["state"] == "done", job
                    break
                if time.perf_counter() - t0 > timeout_s:
                    raise TimeoutError(f"innocent job {i} not done after {timeout_s} s")
                await asyncio.sleep(0.01)
            stats.turnaround_s.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
    return stats


async def cheap_flood(url: str, stop: asyncio.Event, stats: FloodStats, *, connections: int = 8) -> None:
    async with session_from(CHEAP, limit=connections + 2) as s:
        async def submitter(c: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"cheap-{c}-{i}"
                i += 1
                async with s.post(url + "/v1/jobs", json=small_job(key)) as resp:
                    await resp.read()
                    stats.sent += 1
                    stats.statuses[resp.status] += 1
                    if resp.status in (200, 201):
                        stats.keys.append(key)
                await asyncio.sleep(0)

        async def lister() -> None:
            while not stop.is_set():
                async with s.get(url + "/v1/jobs", params={"limit": "500"}) as resp:
                    await resp.read()
                    stats.sent += 1
                    stats.statuses[resp.status] += 1

        await asyncio.gather(*(submitter(c) for c in range(connections)), lister(), lister())


async def heavy_flood(url: str, port: int, stop: asyncio.Event, stats: FloodStats, *, size: int,
                      bomb_bytes: int, max_request_bytes: int) -> None:
    bomb = gzip_bomb(bomb_bytes)

    async def heavy(s: aiohttp.ClientSession, c: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"heavy-{c}-{i}"
            i += 1
            async with s.post(url + "/v1/jobs", json=heavy_job(key, size)) as resp:
                await resp.read()
                stats.sent += 1
                stats.statuses[resp.status] += 1
                if resp.status in (200, 201):
                    stats.keys.append(key)
                else:
                    await asyncio.sleep(0.05)

    async def bombs(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with s.post(url + "/v1/jobs", data=bomb, headers={"Content-Type": "application/json",
                                                                     "Content-Encoding": "gzip"}) as resp:
                await resp.read()
                stats.sent += 1
                stats.statuses[resp.status] += 1

    async def stalled() -> None:
        while not stop.is_set():  # announce the largest body, send a little of it now and then
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(STALLS, 0))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.write(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n{" % max_request_bytes)
            stats.sent += 1
            try:
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b" " * 64)
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1), 0.5)
                    except asyncio.TimeoutError:
                        continue
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

    async with session_from(HEAVY) as hs, session_from(BOMBS) as bs:
        await asyncio.gather(heavy(hs, 0), heavy(hs, 1), bombs(bs), bombs(bs), stalled(), stalled(), stalled(),
                             stalled())


async def delete_keys(url: str, keys: list[str]) -> None:
    """Delete a flood's jobs (queued ones never run) so the next scenario starts from an idle server."""
    async with aiohttp.ClientSession() as s:
        for start in range(0, len(keys), 500):
            async with s.post(url + "/v1/jobs/delete", json={"keys": keys[start:start + 500]}) as resp:
                await resp.read()


def flood_process(kind: str, url: str, port: int, stop, out, options: dict) -> None:
    """Run a flood in a process of its own until ``stop`` (a ``multiprocessing.Event``) is set; put its
    :class:`FloodStats` on ``out``.  Its own process, so that the flood's work on the client side (sending
    megabytes, dozens of connections) never slows the innocent client that measures the server; at a lower
    CPU priority (nice 10), because on the one core the clients share, the flood's own client-side work (it
    draws and encodes a PNG for every heavy job it sends) would otherwise delay the innocent client's event
    loop, a wait that is the clients' machine's, not the server's (on separate machines it does not exist)."""
    import os

    os.nice(10)

    async def main() -> FloodStats:
        done = asyncio.Event()
        stats = FloodStats()
        if kind == "cheap":
            task = asyncio.create_task(cheap_flood(url, done, stats))
        else:
            task = asyncio.create_task(heavy_flood(url, port, done, stats, **options))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.wait_for(task, 120)
        return stats

    stats = asyncio.run(main())
    out.put({"sent": stats.sent, "statuses": dict(stats.statuses), "keys": stats.keys})


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


async def sample_peak_rss(pid: int, stop: asyncio.Event, interval_s: float = 0.01) -> int:
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, rss_bytes(pid))
        except (OSError, KeyError):
            break
        await asyncio.sleep(interval_s)
    return peak
