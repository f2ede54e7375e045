"""The ``aiohttp`` transport: the trainer's HTTP client for one or more data servers.

Synchronous to the trainer (:class:`syngrpo.synthesis.transport.Transport`), asynchronous inside: a private
event loop in a daemon thread submits jobs and polls the servers; ``poll()`` only reads a buffer.

- **Timeouts** on connect and on every request.
- **Retries with backoff** (exponential, jittered) on connection errors and 5xx answers.
- **429 Retry-After** is honoured: the job goes to another server if one has room, else the
  client waits what the server asked, up to ``submit_timeout_s`` (default 10 s; 0 refuses at once,
  so an asynchronous trainer never stalls on full servers).
- **Load spreading** over several URLs: each job goes to the reachable server with the fewest
  of this client's unfinished jobs; a server that just failed is tried last for a cool-down
  (``cooldown_s`` times its consecutive failures).
- **Idempotency**: a retry re-sends the same client key, so a lost answer never makes a second
  job on that server; after a time-out the same server is asked first.
- **Bearer token** from ``token`` or ``$SYNGRPO_SERVER_TOKEN``.
- **Fire-and-forget submission** (:meth:`AiohttpTransport.submit_nowait`, what an asynchronous trainer
  uses): the POST runs on the loop while the trainer goes on; a job no server took comes back from
  ``poll`` as a ``failed`` result with ``refused=True``, and the next submission raises
  :class:`~syngrpo.synthesis.transport.TransportError` at once, so an outage is noticed one job later than with
  the acknowledged :meth:`~AiohttpTransport.submit`, never lost.
- **Deleting collected jobs** (:meth:`AiohttpTransport.delete`): the trainer hands back the results it
  has kept; the background thread deletes them on the server that ran each (``POST /v1/jobs/delete``,
  up to 500 ids a request) within a poll interval.  A server that is down is asked again when it
  answers (up to ``MAX_PENDING_DELETES`` ids each; its own retention deletes the rest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from syngrpo.synthesis.server.clientside import BufferedTransport, LoopThread, ResultBuffer
from syngrpo.synthesis.transport import JobRejected, SynthesisJob, SynthesisResult, TransportError, Unauthorized

log = logging.getLogger("syngrpo.synthesis.transport")

TOKEN_ENV = "SYNGRPO_SERVER_TOKEN"

MAX_PENDING_DELETES = 10_000
"""Ids kept per server to delete while it is unreachable (the oldest go first; its retention covers them)."""

DELETE_CHUNK = 500
"""Ids per ``POST /v1/jobs/delete`` (the server's limit)."""

CLOSE_DELETE_TIMEOUT_S = 2.0
"""How long :meth:`AiohttpTransport.close` gives each server for the last deletions (a run's end never hangs)."""


@dataclass
class _Server:
    url: str
    down_until: float = 0.0
    failures: int = 0
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> key, unfinished
    submitted: int = 0

    def up(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class _Submitting:
    """A fire-and-forget job whose POST has not been answered yet."""

    since: float


@dataclass
class _Pending:
    server: str
    job_id: str
    submitted_at: float


class AiohttpTransport(BufferedTransport):
    """HTTP client of one or more ``syngrpo serve`` processes; see the module doc."""

    def __init__(
        self,
        urls: str | Sequence[str] = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        connect_timeout_s: float = 3.0,
        request_timeout_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        backoff_max_s: float = 8.0,
        cooldown_s: float = 2.0,
        submit_timeout_s: float = 10.0,
        max_retry_after_s: float = 30.0,
        poll_interval_s: float = 0.25,
        give_up_after_s: float = 3600.0,
    ) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError("the aiohttp transport needs at least one server URL")
        self._servers = [_Server(u.strip().rstrip("/")) for u in urls]
        from syngrpo.synthesis.server.config import resolve_token

        # the one token rule of the server (8+ printable ASCII, no whitespace), whatever the source
        self.token = resolve_token(token, "aiohttp transport token")
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.cooldown_s = cooldown_s
        self.submit_timeout_s = submit_timeout_s
        self.max_retry_after_s = max_retry_after_s
        self.poll_interval_s = poll_interval_s
        self.give_up_after_s = give_up_after_s
        self._buffer = ResultBuffer()
        self._rr = 0
        self._closed = False
        self._refusal: str | None = None  # why the last fire-and-forget job found no server (cleared when read)
        self._refusal_unauthorized = False
        self._stopping = False
        self._loop = LoopThread("syngrpo-aiohttp")
        self._session: aiohttp.ClientSession | None = None
        self._wake: asyncio.Event | None = None
        #: per server URL, ids of collected jobs to delete there (touched on the loop thread only)
        self._deletes: dict[str, dict[str, None]] = {}
        self._delete_refused: set[str] = set()  # servers that cannot delete (older ones): said once
        self._loop.call(self._start(), 10)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    # ------------------------------------------------------------------ loop side

    async def _start(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, sock_connect=self.connect_timeout_s)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)
        self._wake = asyncio.Event()
        self._poller = asyncio.create_task(self._poll_loop())

    async def _stop(self) -> None:
        # A flag as well as cancel(): on Python 3.11, asyncio.wait_for swallows a cancellation that arrives
        # as its inner wait completes (a poll() that just set the wake event), and the poller would go on.
        self._stopping = True
        self._poller.cancel()
        try:
            await self._poller
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
        if any(self._deletes.values()):  # the last step's collected jobs: one short try per server
            try:
                await self._flush_deletes(aiohttp.ClientTimeout(total=CLOSE_DELETE_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - the servers' retention deletes them
                pass
        if self._session is not None:
            await self._session.close()

    def _order(self, prefer: _Server | None) -> list[_Server]:
        """Reachable servers first, fewest unfinished jobs of ours first, round-robin among equals."""
        now = time.monotonic()
        self._rr += 1
        n = len(self._servers)
        ranked = sorted(
            range(n),
            key=lambda i: (not self._servers[i].up(now), len(self._servers[i].jobs), (i - self._rr) % n),
        )
        order = [self._servers[i] for i in ranked]
        if prefer is not None:
            order.remove(prefer)
            order.insert(0, prefer)
        return order

    def _mark_down(self, srv: _Server) -> None:
        srv.failures += 1
        srv.down_until = time.monotonic() + min(self.backoff_max_s * 4, self.cooldown_s * srv.failures)

    async def _submit(self, job: SynthesisJob) -> str:
        assert self._session is not None
        payload = json.dumps(job.to_json()).encode()
        deadline = time.monotonic() + self.submit_timeout_s
        failures = 0
        prefer: _Server | None = None
        last = "no server was tried"
        while True:
            retry_after: float | None = None
            for srv in self._order(prefer):
                prefer = None
                try:
                    async with self._session.post(srv.url + "/v1/jobs", data=payload,
                                                  headers={"Content-Type": "application/json"}) as resp:
                        status = resp.status
                        body = await _json(resp)
                        ra = resp.headers.get("Retry-After")
                except asyncio.TimeoutError:
                    # The job may have arrived: ask the same server again first (same key, no duplicate).
                    last = f"{srv.url}: request timed out"
                    self._mark_down(srv)
                    prefer = srv
                    break
                except aiohttp.ClientError as exc:
                    last = f"{srv.url}: {type(exc).__name__}: {exc}"
                    self._mark_down(srv)
                    continue
                if status in (200, 201):
                    srv.failures, srv.down_until = 0, 0.0
                    self._refusal = None  # a server took a job: an earlier refusal is old news
                    job_id = body["id"]
                    srv.jobs[job_id] = job.key
                    srv.submitted += 1
                    self._buffer.add(job.key, _Pending(srv.url, job_id, time.monotonic()))
                    if body.get("state") in ("done", "failed", "cancelled") and self._wake is not None:
                        self._wake.set()
                    return job.key
                err = _error_text(body, status)
                if status == 429 or status == 503:
                    wait = _parse_retry_after(ra, default=1.0)
                    retry_after = wait if retry_after is None else min(retry_after, wait)
                    last = f"{srv.url}: {err}"
                    continue
                if status in (401, 403):  # every job would be refused: the client is misconfigured
                    raise Unauthorized(f"{srv.url} refused job {job.key!r}: {err} (check synthesis.token or "
                                       f"${TOKEN_ENV})")
                if 400 <= status < 500:
                    raise JobRejected(f"{srv.url} refused job {job.key!r}: {err}")
                last = f"{srv.url}: {err}"
                self._mark_down(srv)
            now = time.monotonic()
            if retry_after is not None and prefer is None:
                delay = min(retry_after, self.max_retry_after_s)
            else:
                failures += 1
                if failures > self.retries:
                    raise TransportError(f"no data server took job {job.key!r} after {self.retries} retries; "
                                         f"last: {last}")
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
            if now + delay > deadline:
                raise TransportError(f"no data server took job {job.key!r} within {self.submit_timeout_s:g} s; "
                                     f"last: {last}")
            await asyncio.sleep(delay)

    async def _submit_in_background(self, job: SynthesisJob) -> None:
        try:
            await self._submit(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal becomes a result, never a lost job
            no_server = not isinstance(exc, JobRejected)
            if no_server:
                self._refusal = str(exc)
                self._refusal_unauthorized = isinstance(exc, Unauthorized)
            self._buffer.complete(SynthesisResult(job.key, "failed", error=f"not submitted: {exc}",
                                                  refused=no_server))

    async def _poll_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._poll_once()
                if any(self._deletes.values()):
                    await self._flush_deletes()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("polling the data servers failed")

    async def _poll_once(self) -> None:
        await asyncio.gather(*(self._poll_server(s) for s in self._servers if s.jobs))
        now = time.monotonic()
        for key, info in self._buffer.pending_items():
            if isinstance(info, _Pending) and now - info.submitted_at > self.give_up_after_s:
                self._forget(info.server, info.job_id)
                self._buffer.complete(SynthesisResult(  # with its id: deleting it cancels it on the server
                    key, "failed", error=f"no result from {info.server} after {self.give_up_after_s:g} s",
                    server=info.server, job_id=info.job_id))

    def _forget(self, url: str, job_id: str) -> None:
        for s in self._servers:
            if s.url == url:
                s.jobs.pop(job_id, None)

    async def _poll_server(self, srv: _Server) -> None:
        assert self._session is not None
        ids = list(srv.jobs)
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            try:
                async with self._session.get(srv.url + "/v1/jobs",
                                             params={"ids": ",".join(chunk), "limit": "500"}) as resp:
                    if resp.status != 200:
                        return
                    body = await _json(resp)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # unreachable for now: the jobs are on its disk, try again later
            found = {j["id"]: j for j in body.get("jobs", [])}
            deleted = {d["id"]: d for d in body.get("deleted", []) if isinstance(d, dict) and "id" in d}
            for job_id in chunk:
                key = srv.jobs.get(job_id)
                if key is None:
                    continue
                j = found.get(job_id)
                if j is None:
                    srv.jobs.pop(job_id, None)
                    gone = deleted.get(job_id)
                    if gone is not None and gone.get("final_state") == "cancelled":
                        # cancelling deletes a job on the server (its row and files): it answers as a tombstone
                        self._buffer.complete(SynthesisResult(key, "cancelled", error="cancelled", server=srv.url,
                                                              job_id=job_id))
                    elif gone is not None:
                        self._buffer.complete(SynthesisResult(
                            key, "failed", error=f"{srv.url} deleted job {job_id} ({gone.get('reason')}) before "
                            "its result was collected", server=srv.url, job_id=job_id))
                    else:
                        self._buffer.complete(SynthesisResult(key, "failed", error=f"{srv.url} no longer knows "
                                                              f"job {job_id}", server=srv.url))
                    continue
                if j["state"] not in ("done", "failed", "cancelled"):
                    continue
                image = None
                if j["state"] == "done":
                    try:
                        async with self._session.get(f"{srv.url}/v1/jobs/{job_id}/result.png") as resp:
                            if resp.status != 200:
                                continue
                            image = await resp.read()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        continue
                srv.jobs.pop(job_id, None)
                self._buffer.complete(SynthesisResult(key, j["state"], image_png=image, error=j.get("error"),
                                                      seconds=j.get("seconds"), server=srv.url, job_id=job_id))

    async def _healthy(self) -> bool:
        assert self._session is not None

        async def one(srv: _Server) -> bool:
            try:
                async with self._session.get(srv.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    ok = r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False
            if ok:  # it answers: no reason left to cool it down (submit_nowait refuses while all cool down)
                srv.failures, srv.down_until = 0, 0.0
            return ok

        return any(await asyncio.gather(*(one(s) for s in self._servers)))

    async def _cancel(self, key: str) -> None:
        assert self._session is not None
        info = self._buffer.info(key)
        if not isinstance(info, _Pending):
            return
        try:
            async with self._session.post(f"{info.server}/v1/jobs/{info.job_id}/cancel") as resp:
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        assert self._wake is not None
        self._wake.set()

    async def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _queue_deletes(self, by_server: dict[str, list[str]]) -> None:
        for url, ids in by_server.items():
            pending = self._deletes.setdefault(url, {})
            pending.update(dict.fromkeys(ids))
            while len(pending) > MAX_PENDING_DELETES:
                pending.pop(next(iter(pending)))
        await self._wake_up()

    async def _flush_deletes(self, timeout: aiohttp.ClientTimeout | None = None) -> None:
        """Send the pending deletions to every server that is up (a failed one is tried after its cool-down)."""
        assert self._session is not None
        now = time.monotonic()
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        for srv in self._servers:
            pending = self._deletes.get(srv.url)
            if not pending or not srv.up(now):
                continue
            while pending:
                chunk = list(pending)[:DELETE_CHUNK]
                try:
                    async with self._session.post(srv.url + "/v1/jobs/delete", json={"ids": chunk},
                                                  **extra) as resp:
                        status = resp.status
                        body = await _json(resp)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    log.debug("deleting %d job(s) on %s failed (%s); asking again later", len(chunk), srv.url, exc)
                    self._mark_down(srv)
                    break
                if status >= 500 or status in (429, 503):
                    break  # busy or failing now: the next poll asks again
                if status != 200 and srv.url not in self._delete_refused:
                    self._delete_refused.add(srv.url)
                    log.warning("%s cannot delete collected jobs (%s); its finished jobs stay until its "
                                "retention deletes them", srv.url, _error_text(body, status))
                for job_id in chunk:  # deleted, or never will be: either way not asked again
                    pending.pop(job_id, None)

    # ------------------------------------------------------------------ Transport

    def submit(self, job: SynthesisJob) -> str:
        if self._closed:
            raise TransportError("the aiohttp transport is closed")
        return self._loop.call(self._submit(job), self.submit_timeout_s + self.request_timeout_s + 5)

    def submit_nowait(self, job: SynthesisJob) -> str:
        """Queue a job without waiting for a server's answer (see the module doc); returns its key.

        Raises :class:`TransportError` at once when the previous fire-and-forget job found no
        server, or when every server is cooling down after failures.
        """
        if self._closed:
            raise TransportError("the aiohttp transport is closed")
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            raise (Unauthorized if self._refusal_unauthorized else TransportError)(refusal)
        now = time.monotonic()
        if not any(s.up(now) for s in self._servers):
            raise TransportError(f"every data server failed recently ({', '.join(self.urls)}); cooling down")
        if self._buffer.is_pending(job.key):
            return job.key  # already on its way or on a server: the key makes a resend pointless
        self._buffer.add(job.key, _Submitting(now))
        self._loop.spawn(self._submit_in_background(job))
        return job.key

    def poll(self) -> list[SynthesisResult]:
        """Finished jobs since the last call; also asks the servers now, so the next call sees fresh results."""
        if not self._closed:
            self._loop.spawn(self._wake_up())
        return super().poll()

    def wait(self, keys: Sequence[str], timeout: float) -> list[SynthesisResult]:
        if not self._closed:
            self._loop.spawn(self._wake_up())  # poll the servers now, not at the next interval
        return super().wait(keys, timeout)

    def healthy(self) -> bool:
        if self._closed:
            return False
        ok = bool(self._loop.call(self._healthy(), 10))
        if ok:
            self._refusal = None
        return ok

    def cancel(self, key: str) -> None:
        """Ask the server to cancel a job (its result arrives as ``cancelled`` unless it finished first)."""
        if not self._closed:
            self._loop.call(self._cancel(key), self.request_timeout_s + 5)

    def delete(self, results: Sequence[SynthesisResult]) -> None:
        """Delete finished jobs on the servers that ran them once the trainer kept what it needs.

        Returns at once: the transport's thread sends them within a poll interval, and again when a
        server that was down answers.  A running job (one given up on) is cancelled, then deleted.
        """
        by_server: dict[str, list[str]] = {}
        for r in results:
            if r.job_id and r.server:
                by_server.setdefault(r.server, []).append(r.job_id)
        if by_server and not self._closed:
            try:
                self._loop.call(self._queue_deletes(by_server), 5)  # only queues them: the loop is never busy long
            except Exception:  # noqa: BLE001 - never raises: the servers' retention deletes them
                log.debug("could not queue %d deletion(s)", sum(map(len, by_server.values())))

    def stats(self) -> dict[str, Any]:
        """Client-side counts and the jobs each server holds for us (for the trainer's logs)."""
        out = super().stats()
        out["per_server"] = {s.url: {"unfinished": len(s.jobs), "submitted": s.submitted} for s in self._servers}
        out["deletes_pending"] = sum(len(ids) for ids in list(self._deletes.values()))
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call(self._stop(), 10)
        except Exception:  # noqa: BLE001
            pass
        self._loop.stop()



async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _error_text(body: dict[str, Any], status: int) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return f"{status} {err.get('code')}: {err.get('message')}"
    return f"HTTP {status}"


def _parse_retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default  # an HTTP date: not sent by syngrpo servers
