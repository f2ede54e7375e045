"""The coordinator: one Ray actor that owns the job store and the queue, serves the HTTP API and the page,
and hands batches to the replicas.

It runs the very job service of ``syngrpo serve`` (:class:`~syngrpo.synthesis.server.workers.JobService`)
on the actor's event loop, with a :class:`~syngrpo_ray.pool.ReplicaPool` for workers, so every job
semantic is the HTTP server's by construction: idempotent keys and their tombstones, the bounded queue
(429), submission checks, deadlines, the label check, failures returned, retention, the disk budget,
persistence across a crash (the store is on the coordinator's node, which is pinned: the node that ran
``syngrpo serve --backend ray``).  Its HTTP front is the same aiohttp application (API, ``/metrics``, the
live page, the token rules), bound on that node.

The ``ray`` transport calls the methods below instead of HTTP; they answer plain values (job records as
the API's JSON: ``{"ok": true, "job": {...}}``, a refusal ``{"ok": false, "error": {...}, "status": N}``),
never raise for a refused job.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from aiohttp import web

from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.runner import format_url
from syngrpo.synthesis.server.validation import ApiError, SubmissionBody
from syngrpo.synthesis.server.workers import JobService
from syngrpo_ray.options import RayBackendOptions
from syngrpo_ray.pool import ReplicaPool

log = logging.getLogger("syngrpo.synthesis.server")


def _error(err: ApiError) -> dict[str, Any]:
    return {"ok": False, **err.to_json(), "status": err.status, "retry_after": err.headers.get("Retry-After")}


class Coordinator:
    """The actor class (see the module doc); every method runs on the actor's event loop."""

    def __init__(self, config: ServerConfig, options: RayBackendOptions) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s coordinator %(levelname)s %(name)s: %(message)s")
        self.config = config
        self.options = options
        self.pool = ReplicaPool(options, config)
        self.service: JobService | None = None
        self.runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> dict[str, Any]:
        """Open the store (recovering after a crash), start the replicas and the HTTP front; returns where."""
        self.service = JobService(self.config, pool=self.pool)
        app = create_app(service=self.service)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    keepalive_timeout=self.config.read_timeout_s)
        await self.runner.setup()  # on_startup: the service starts (store, recovery, pool)
        site = web.TCPSite(self.runner, self.config.host, self.config.port)
        await site.start()
        port = self.config.port
        for addr in self.runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                port = int(addr[1])
                break
        self.url = format_url(self.config.host, port)
        log.info("coordinator %s listening on %s (store %s)", self.options.name, self.url, self.config.data_dir)
        return {"url": self.url, "host": self.config.host, "port": port, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()}

    async def stop(self) -> None:
        """Stop the HTTP front and the service: running jobs go back to the queue, replicas are killed."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def ping(self) -> bool:
        return True

    # -- what the ray transport calls

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.service is not None
        try:
            parsed = SubmissionBody.model_validate(body, strict=False)
        except Exception as exc:  # noqa: BLE001 - a malformed job: refused like the API's 422
            return {"ok": False, "error": {"code": "invalid_request", "message": str(exc)}, "status": 422}
        try:
            rec, created = await self.service.submit(parsed)
        except ApiError as err:
            return _error(err)
        return {"ok": True, "job": rec.to_json(), "created": created}

    async def finished(self, ids: list[str]) -> list[dict[str, Any]]:
        """The final ones among ``ids`` (a deleted or unknown id answers ``state: gone``), with done images."""
        assert self.service is not None
        store = self.service.store
        found = {r.id: r for r in store.list(ids=ids, limit=len(ids) or 1)}
        out = []
        for job_id in ids:
            rec = found.get(job_id)
            if rec is None:
                out.append({"id": job_id, "state": "gone"})
                continue
            if rec.state not in ("done", "failed", "cancelled"):
                continue
            item = {"id": rec.id, "key": rec.key, "state": rec.state, "error": rec.error, "seconds": rec.seconds}
            if rec.state == "done":
                try:
                    item["image"] = await asyncio.to_thread(store.result_path(rec.id).read_bytes)
                except OSError as exc:
                    item.update(state="failed", error=f"result file unreadable: {exc}")
            out.append(item)
        return out

    async def cancel(self, job_id: str) -> None:
        assert self.service is not None
        try:
            self.service.cancel(job_id)
        except ApiError:
            pass

    async def delete(self, ids: list[str]) -> int:
        assert self.service is not None
        return len((await self.service.delete(ids)).deleted)

    async def health(self) -> dict[str, Any]:
        assert self.service is not None
        return {**self.service.health(), "url": self.url, "pool": self.pool.status()}


# the coordinator takes no CPU slot (it waits on I/O); many transport calls run at once on its loop
CoordinatorActor = ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=0)(Coordinator)
