"""Retention: finished jobs nobody collected are deleted, in sweeps of bounded work.

Its own module because it is a loop beside the job service, not part of a request: every
``retention_sweep_s`` a sweep deletes at most ``retention_batch`` finished jobs that are due (those
a client deleted while they ran, then those past ``retention_s``), forgets tombstones older than
``tombstone_s`` and retries job folders an earlier deletion left; while a backlog remains, sweeps
run a second apart so that the server keeps answering in between.  Deleting itself (rows, then
folders) is :meth:`~syngrpo.synthesis.server.workers.JobService.delete`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from syngrpo.synthesis.server.files import is_storage_full
from syngrpo.synthesis.server.records import DELETE_REASONS

log = logging.getLogger("syngrpo.synthesis.server")

BACKLOG_SWEEP_S = 1.0
"""Pause between two retention sweeps while a backlog remains (each sweep deletes at most ``retention_batch``)."""


async def retention_sweep(service: Any, now: float | None = None) -> int:
    """One sweep of ``service`` (a :class:`~syngrpo.synthesis.server.workers.JobService`); returns how many
    jobs it deleted."""
    cfg = service.config
    now = time.time() if now is None else now
    older = now - cfg.retention_s if cfg.retention_s is not None else None
    due = service.store.due_for_deletion(older, cfg.retention_batch)
    deleted = 0
    for reason in DELETE_REASONS:
        ids = [i for i, r in due if r == reason]
        if ids:
            deleted += len((await service.delete(ids, reason)).deleted)
    if deleted:
        log.info("deleted %d finished job(s) (%s)", deleted, ", ".join(sorted({r for _, r in due})))
    service.store.prune_tombstones(now - cfg.tombstone_s, cfg.retention_batch)
    if service.store.leftover_dirs:
        await asyncio.to_thread(service.store.retry_leftovers)
    return deleted


async def sweep_safely(service: Any) -> int:
    """A sweep that never raises: a full disk is recorded, a bug logged; the next sweep tries again."""
    try:
        return await retention_sweep(service)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a full disk or a bug: say so, try again next time
        if is_storage_full(exc):
            service.storage_problem(exc)
        else:
            log.exception("the retention sweep failed")
        return 0


async def retention_loop(service: Any, deleted: int) -> None:
    """A sweep every ``retention_sweep_s``; a second apart while a backlog remains (bounded work each)."""
    cfg = service.config
    while True:
        await asyncio.sleep(BACKLOG_SWEEP_S if deleted >= cfg.retention_batch else cfg.retention_sweep_s)
        deleted = await sweep_safely(service)
