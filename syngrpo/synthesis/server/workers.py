"""The job service: the bounded queue, submissions, the disk budget, deletion and retention.

:class:`JobService` owns the store and the workers and is what the HTTP handlers and the
``inprocess`` transport call; it must run on one asyncio event loop.  Its workers, one per device,
run synthesis in threads of their own under a time-out (:mod:`.device_worker`, which says what
happens to a call past its time-out); ``GET /metrics`` is written by :mod:`.metrics`.

A full disk (:func:`syngrpo.synthesis.server.files.is_storage_full`) never kills a worker: it retries its
database writes with back-off, ``/healthz`` says ``degraded`` with the reason, submissions get a
507, and everything resumes when space returns.  The disk should not get there: a submission that
would take the store past ``max_store_bytes``, or leave less than ``min_free_bytes`` free on its
filesystem, is refused first (429 ``store_full`` / ``disk_low``), while clients delete the jobs they
collected and a retention sweep deletes finished jobs nobody collected (``retention_s``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syngrpo.plugins import Registry, get_registry
from syngrpo.synthesis.pipeline import job_options_model
from syngrpo.synthesis.server.calls import CallTimeout, call_in_thread, load_plugin_modules, make_plugin, percentile
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.device_worker import Worker
from syngrpo.synthesis.server.files import atomic_write, is_storage_full, take_last_exit
from syngrpo.synthesis.server.metrics import metrics_text
from syngrpo.synthesis.server.records import DELETE_REASONS, DeleteOutcome, JobRecord
from syngrpo.synthesis.server.store import DuplicateKeyError, JobStore
from syngrpo.synthesis.server.validation import ApiError, Submission, SubmissionBody, fingerprint, validate_submission

__all__ = ["CallTimeout", "JobService", "Worker", "call_in_thread", "load_plugin_modules", "make_plugin", "percentile"]

log = logging.getLogger("syngrpo.synthesis.server")

STOP_RECANCEL_S = 1.0
"""How long :meth:`JobService.stop` waits for a cancelled worker before cancelling it again."""

STORE_FULL_RETRY_S = 10
"""``Retry-After`` of a submission refused for disk (a client collecting and deleting frees room within steps)."""

BACKLOG_SWEEP_S = 1.0
"""Pause between two retention sweeps while a backlog remains (each sweep deletes at most ``retention_batch``)."""


class JobService:
    """Store + queue + workers; every method runs on the event loop that called :meth:`start`."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        if registry is None:
            registry = get_registry(load_plugin_modules(config.plugins)) if config.plugins else get_registry()
        self.registry = registry
        # Unknown names are configuration errors at start-up, not failed jobs later.
        for name in config.served_synthesizers():
            registry.get("synthesizers", name)
        registry.get("segmenters", config.segmenter)
        self.option_models = {name: job_options_model(registry.get("synthesizers", name).factory)
                              for name in config.served_synthesizers()}
        self.store = JobStore(config.data_dir)
        self.workers = [Worker(i, dev, self) for i, dev in enumerate(config.workers)]
        self.rejected = 0
        self.storage_error: str | None = None  # why the last write failed on a full disk (None: fine)
        self.storage_refused = 0
        self.store_full_refused = 0  # submissions refused by max_store_bytes or min_free_bytes
        self._reserved = 0  # queue slots taken by submissions being written
        self._reserved_bytes = 0  # disk those submissions will take (input, and a result its size)
        self._typical_need = 0  # what the last stored job needed: /healthz says degraded while one would not fit
        self.started_at = time.time()
        self._cond: asyncio.Condition | None = None
        self._listeners: list[Callable[[JobRecord], None]] = []
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle

    async def start(self) -> None:
        self._cond = asyncio.Condition()
        cause = take_last_exit(self.store.data_dir)  # how the previous server died (its supervisor says)
        requeued, failed = self.store.recover(self.config.max_attempts, cause)
        if requeued or failed:
            log.info("recovered after a restart%s: %d jobs re-queued, %d failed",
                     f" (the previous server: {cause})" if cause else "", requeued, failed)
        tmp_files, orphans = self.store.sweep()
        if tmp_files or orphans:
            log.info("removed %d unfinished temporary file(s) and %d job folder(s) without a job (never "
                     "committed, or deleted)", tmp_files, orphans)
        # before the first request: jobs deleted while they ran when the server stopped go now, files too
        deleted = await self._sweep_safely()
        for w in self.workers:
            w.task = asyncio.create_task(w.run(), name=w.name)
        self._sweeper = asyncio.create_task(self._retention_loop(deleted), name="syngrpo-retention")

    async def stop(self) -> None:
        """Cancel the workers, wait for them to end, put their running jobs back in the queue.

        A cancellation can be lost on its way (Python < 3.12's ``asyncio.wait_for`` swallowed one
        that arrived as the awaited call returned), and a worker that missed it would wait for jobs
        forever and hang the stop; so a worker still running after ``STOP_RECANCEL_S`` is cancelled
        again until it ends.
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the loop logs its own failures
                pass
        running: list[str] = []
        tasks = {w.task: w for w in self.workers if w.task is not None}
        for task, w in tasks.items():
            running.extend(w.current)
            task.cancel()
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_RECANCEL_S)
            for task in pending:
                log.warning("%s did not stop when cancelled; cancelling it again", tasks[task].name)
                running.extend(tasks[task].current)
                task.cancel()
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: run() has logged any failure already
        self.store.requeue(running)  # a graceful stop does not count as an attempt
        self.store.close()

    def add_listener(self, fn: Callable[[JobRecord], None]) -> None:
        """Call ``fn(job)`` (on the loop) whenever a job reaches a final state."""
        self._listeners.append(fn)

    # -- queue

    def retry_after_s(self) -> int:
        """A client's wait before a queue slot is likely free: one mean job time per busy worker slot."""
        times = self.store.recent_seconds(50)
        mean = sum(times) / len(times) if times else 1.0
        active = max(1, sum(w.state in ("ready", "busy") for w in self.workers))
        return max(1, min(600, math.ceil(mean / active)))

    def _queue_full(self) -> ApiError:
        self.rejected += 1
        wait = self.retry_after_s()
        return ApiError(429, "queue_full",
                        f"the queue holds {self.config.queue_size} jobs; retry in {wait} s",
                        headers={"Retry-After": str(wait)})

    async def submit(self, body: SubmissionBody) -> tuple[JobRecord, bool]:
        """Queue a job; returns ``(job, created)``: an idempotent retry returns the existing job."""
        existing = self._existing(body)
        if existing is not None:
            return existing, False
        if all(w.state == "broken" for w in self.workers):
            raise ApiError(503, "unavailable", "every worker of this server is broken (see /healthz); "
                           "submit to another server", headers={"Retry-After": "60"})
        if self._queued_or_reserved() >= self.config.queue_size:
            raise self._queue_full()
        self._check_disk(0)
        sub: Submission = await asyncio.to_thread(validate_submission, body, self.config, self.option_models)
        existing = self._existing(body)  # a concurrent retry may have won while the image was decoded
        if existing is not None:
            return existing, False
        # Check and reserve a slot and its bytes with no await in between: concurrent submissions cannot all pass.
        if self._queued_or_reserved() >= self.config.queue_size:
            raise self._queue_full()
        need = 2 * len(sub.png)  # the input now, and a result about its size later
        self._check_disk(need)
        self._reserved += 1
        self._reserved_bytes += need
        self._typical_need = need
        try:
            return await self._store_new(body, sub)
        finally:
            self._reserved -= 1
            self._reserved_bytes -= need

    def _queued_or_reserved(self) -> int:
        return self.store.queued_count() + self._reserved

    async def _store_new(self, body: SubmissionBody, sub: Submission) -> tuple[JobRecord, bool]:
        job_id = uuid.uuid4().hex
        rec = JobRecord(
            id=job_id, key=sub.key, fingerprint=sub.fingerprint, state="queued", synthesizer=sub.synthesizer,
            group_key=sub.group_key, width=sub.image.width, height=sub.image.height, boxes=sub.boxes,
            labels=sub.labels, description=sub.description, options=sub.options, seed=sub.seed,
            created_at=time.time(),
        )
        rec.bytes = len(sub.png)
        try:
            await asyncio.to_thread(atomic_write, self.store.input_path(job_id), sub.png)
            self.store.insert(rec)
        except DuplicateKeyError:
            self.store.remove_job_files(job_id)
            existing = self._existing(body)
            if existing is None:  # pragma: no cover - a key cannot vanish
                raise
            return existing, False
        except Exception as exc:
            self.store.remove_job_files(job_id)  # no orphan folder for a job that was never acknowledged
            if is_storage_full(exc):
                self.storage_problem(exc)
                self.storage_refused += 1
                raise ApiError(507, "insufficient_storage",
                               f"the server cannot store the job: its disk is full ({exc}); retry later",
                               headers={"Retry-After": "30"}) from None
            raise
        self.storage_ok()
        await self._notify()
        return rec, True

    # -- the disk budget

    def disk_refusal(self, need: int = 0) -> ApiError | None:
        """Why a submission needing ``need`` more bytes would be refused for disk (``None``: it fits).

        What the store will hold: its files and database now, a result for every queued or running
        job (about its input's size), the submissions being written, and ``need``.
        """
        cfg = self.config
        coming = self.store.unfinished_input_bytes() + self._reserved_bytes + need
        headers = {"Retry-After": str(STORE_FULL_RETRY_S)}
        if cfg.max_store_bytes is not None:
            used = self.store.bytes_used()
            if used + coming > cfg.max_store_bytes:
                return ApiError(429, "store_full",
                                f"the job store holds {used} bytes and its queued jobs will add about {coming}; "
                                f"its budget is {cfg.max_store_bytes} (max_store_bytes). Finished jobs are deleted "
                                f"when clients collect them or after retention_s; retry in {STORE_FULL_RETRY_S} s",
                                headers=headers)
        if cfg.min_free_bytes:
            try:
                free = shutil.disk_usage(self.store.data_dir).free
            except OSError:
                return None
            if free - coming < cfg.min_free_bytes:
                return ApiError(429, "disk_low",
                                f"the job store's disk has {free} bytes free and its queued jobs will take about "
                                f"{coming}; the server keeps {cfg.min_free_bytes} free (min_free_bytes); retry in "
                                f"{STORE_FULL_RETRY_S} s", headers=headers)
        return None

    def _check_disk(self, need: int) -> None:
        refusal = self.disk_refusal(need)
        if refusal is not None:
            self.store_full_refused += 1
            raise refusal

    # -- a full disk

    def storage_problem(self, exc: BaseException) -> None:
        """Record that a write failed on a full disk (``/healthz`` says ``degraded`` until one succeeds)."""
        if self.storage_error is None:
            log.warning("the job store's disk is full: %s (submissions get 507 until a write succeeds)", exc)
        self.storage_error = f"{type(exc).__name__}: {exc}"

    def storage_ok(self) -> None:
        if self.storage_error is not None:
            log.info("the job store accepts writes again")
        self.storage_error = None

    async def finish_durably(self, job_id: str, error: str | None) -> None:
        """:meth:`finish`, retried with back-off while the disk is full (the worker never dies of it).

        A job a client deleted while it ran is deleted now (else the next retention sweep does it).
        """
        delay = 0.5
        while True:
            try:
                rec = self.finish(job_id, error)
                break
            except Exception as exc:
                if not is_storage_full(exc):
                    raise
                self.storage_problem(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if rec is not None and rec.delete_requested:
            try:
                await self.delete([job_id])
            except Exception:  # noqa: BLE001 - the retention sweep deletes it later
                log.exception("deleting job %s after its call returned failed", job_id)

    def _existing(self, body: SubmissionBody) -> JobRecord | None:
        """The job this submission is a retry of, or ``None`` for a new one; 409 for a key used for other content.

        A deleted job's key keeps its content for ``tombstone_s``: the same content makes a fresh job
        (a trainer resumed from a checkpoint asks again for jobs it collected and deleted since; the
        same seed gives it the same image), other content is a conflict.
        """
        found = self.store.get_by_key(body.key)
        if found is None:
            tomb = self.store.tombstone_by_key(body.key)
            if tomb is not None and tomb.fingerprint != fingerprint(body):
                raise ApiError(409, "key_conflict",
                               f"key {body.key!r} was used for a different job ({tomb.id}, deleted); "
                               "use a new key for new content")
            return None
        if found.fingerprint != fingerprint(body):
            raise ApiError(409, "key_conflict",
                           f"key {body.key!r} was already used for a different job ({found.id}); "
                           "use a new key for new content")
        return found

    async def _notify(self) -> None:
        assert self._cond is not None, "JobService.start() was not awaited"
        async with self._cond:
            self._cond.notify_all()

    async def next_batch(self, worker: Worker) -> list[JobRecord]:
        """Wait for queued jobs and claim up to ``batch_size`` of one group for ``worker``."""
        assert self._cond is not None
        cfg = self.config
        delay = 0.5
        async with self._cond:
            while True:
                try:
                    jobs = self.store.claim(worker.name, cfg.batch_size)
                except Exception as exc:
                    if not is_storage_full(exc):
                        raise
                    self.storage_problem(exc)  # the database cannot commit: wait for space, do not die
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if jobs:
                    break
                await self._cond.wait()
        if cfg.batch_wait_s > 0 and len(jobs) < cfg.batch_size:
            await asyncio.sleep(cfg.batch_wait_s)
            jobs += self.store.claim(worker.name, cfg.batch_size - len(jobs), group_key=jobs[0].group_key)
        return jobs

    def finish(self, job_id: str, error: str | None) -> JobRecord | None:
        rec = self.store.finish(job_id, "failed" if error else "done", error=error)
        if error is None or "disk is full" not in error:
            self.storage_ok()
        if rec is None:
            return None
        if rec.state == "failed":
            log.info("job %s (%s) failed: %s", rec.id, rec.key, rec.error)
        self._tell(rec)
        return rec

    def _tell(self, rec: JobRecord) -> None:
        for fn in self._listeners:
            try:
                fn(rec)
            except Exception:  # noqa: BLE001 - a listener must not stop the worker
                log.exception("job listener failed")

    # -- deleting

    async def delete(self, job_ids: list[str], reason: str = "client") -> DeleteOutcome:
        """Delete jobs: rows first (one transaction, with tombstones), then their folders.

        A queued job is deleted at once (a listener hears it ``cancelled``), a running one is
        cancelled and deleted when its call returns, a deleted one answers as before.
        """
        outcome = self.store.delete(job_ids, reason)
        for rec in outcome.deleted:
            if rec.state == "cancelled" and rec.finished_at is None:  # it was queued: a waiting client hears it
                rec.finished_at, rec.error = time.time(), "deleted before it ran"
                self._tell(rec)
        if outcome.deleted:
            ids = [r.id for r in outcome.deleted]
            await asyncio.to_thread(lambda: [self.store.remove_job_files(i) for i in ids])
        return outcome

    async def retention_sweep(self, now: float | None = None) -> int:
        """One sweep: delete at most ``retention_batch`` finished jobs that are due, forget old tombstones,
        retry folders a deletion left; returns how many jobs it deleted."""
        cfg = self.config
        now = time.time() if now is None else now
        older = now - cfg.retention_s if cfg.retention_s is not None else None
        due = self.store.due_for_deletion(older, cfg.retention_batch)
        deleted = 0
        for reason in DELETE_REASONS:
            ids = [i for i, r in due if r == reason]
            if ids:
                deleted += len((await self.delete(ids, reason)).deleted)
        if deleted:
            log.info("deleted %d finished job(s) (%s)", deleted, ", ".join(sorted({r for _, r in due})))
        self.store.prune_tombstones(now - cfg.tombstone_s, cfg.retention_batch)
        if self.store.leftover_dirs:
            await asyncio.to_thread(self.store.retry_leftovers)
        return deleted

    async def _sweep_safely(self) -> int:
        try:
            return await self.retention_sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a full disk or a bug: say so, try again next time
            if is_storage_full(exc):
                self.storage_problem(exc)
            else:
                log.exception("the retention sweep failed")
            return 0

    async def _retention_loop(self, deleted: int) -> None:
        """A sweep every ``retention_sweep_s``; a second apart while a backlog remains (bounded work each)."""
        cfg = self.config
        while True:
            await asyncio.sleep(BACKLOG_SWEEP_S if deleted >= cfg.retention_batch else cfg.retention_sweep_s)
            deleted = await self._sweep_safely()

    # -- reads

    def get(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        if rec is None:
            tomb = self.store.tombstone(job_id)
            if tomb is not None:
                raise ApiError(410, "deleted", f"job {job_id} was deleted ({tomb.reason}) at {tomb.deleted_at:.0f}",
                               details={"deleted_at": tomb.deleted_at, "reason": tomb.reason})
            raise ApiError(404, "not_found", f"no job {job_id}")
        return rec

    def cancel(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        if rec.state in ("done", "failed"):
            raise ApiError(409, "already_final", f"job {job_id} is already {rec.state}")
        rec = self.store.cancel(job_id) or rec
        if rec.state == "cancelled":
            self._tell(rec)
        return rec

    def result_path(self, job_id: str, which: str = "result") -> Path:
        """The file of a done job (``result``, ``mask``) or any job's ``input``."""
        rec = self.get(job_id)
        if which != "input" and rec.state != "done":
            if rec.state == "failed":
                raise ApiError(409, "job_failed", f"job {job_id} failed: {rec.error}")
            raise ApiError(409, "not_ready", f"job {job_id} is {rec.state}; its result is not there yet")
        path = {"result": self.store.result_path, "mask": self.store.mask_path,
                "input": self.store.input_path}[which](job_id)
        if not path.is_file():  # pragma: no cover - only if someone deleted files under data_dir
            raise ApiError(410, "gone", f"the {which} file of job {job_id} is missing on the server")
        return path

    def health(self) -> dict[str, Any]:
        workers = [w.health() for w in self.workers]
        usable = any(w["state"] != "broken" for w in workers)
        disk = None if self.storage_error else self.disk_refusal(self._typical_need)
        status = "broken" if not usable else "degraded" if self.storage_error or disk else "ok"
        out: dict[str, Any] = {
            "status": status,
            "ready": all(w["state"] in ("ready", "busy") for w in workers),
            "queue_depth": self.store.queued_count(),
            "workers": workers,
        }
        if self.storage_error:
            out["reason"] = f"the job store's disk is full: {self.storage_error}"
        elif disk is not None:
            out["reason"] = f"new jobs are refused ({disk.code}): {disk.message}"
        return out

    def metrics_text(self) -> str:
        """Prometheus text exposition (version 0.0.4): :func:`syngrpo.synthesis.server.metrics.metrics_text`."""
        return metrics_text(self)
