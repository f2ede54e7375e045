"""The job service: the bounded queue, submissions, the fair choice of the next job, deletion.

:class:`JobService` owns the store and the workers and is what the HTTP handlers and the
``inprocess`` transport call; it must run on one asyncio event loop.  Its workers, one per device,
run synthesis under a time-out, each in a process of its own or in a thread (``worker_isolation``;
:mod:`.device_worker` says what happens to a call past its time-out or a device that dies), or on
replicas a :class:`WorkerPool` adds and retires (the ``ray`` backend); ``GET /metrics`` is written
by :mod:`.metrics`.

Clients share it (issue 24): a client alone may fill the queue, but one arriving at a full queue
still gets ``client_queue_share`` of it (:meth:`JobService._check_queue`), and the next job is the
oldest of the client that has used the workers least lately (:mod:`.fairness`; ``scheduling: fifo``
for first come, first served).

A full disk (:func:`syngrpo.synthesis.server.files.is_storage_full`) never kills a worker: it retries its
database writes with back-off, ``/healthz`` says ``degraded`` with the reason, submissions get a
507, a job whose result could not be written goes back to the queue, and everything resumes when
space returns.  The disk should not get there: a submission that would take the store past
``max_store_bytes``, or leave less than ``min_free_bytes`` free on its filesystem, is refused first
(:mod:`.disk`: 429 ``store_full`` / ``disk_low``), while clients delete the jobs they collected,
cancelling deletes, and a retention sweep deletes finished jobs nobody collected (:mod:`.retention`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from syngrpo.errors import ConfigError
from syngrpo.plugins import Registry, get_registry
from syngrpo.synthesis.pipeline import job_options_model
from syngrpo.synthesis.server.calls import CallTimeout, call_in_thread, load_plugin_modules, make_plugin, percentile
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.device_worker import Runner, Worker, make_runner
from syngrpo.synthesis.server.disk import DiskBudget
from syngrpo.synthesis.server.fairness import FairShare
from syngrpo.synthesis.server.files import is_storage_full, take_last_exit
from syngrpo.synthesis.server.intake import SubmissionIntake
from syngrpo.synthesis.server.metrics import metrics_text
from syngrpo.synthesis.server.records import DeleteOutcome, JobRecord
from syngrpo.synthesis.server.retention import retention_loop, retention_sweep, sweep_safely
from syngrpo.synthesis.server.store import JobStore
from syngrpo.synthesis.server.validation import ApiError

__all__ = ["CallTimeout", "JobService", "Worker", "call_in_thread", "load_plugin_modules", "make_plugin", "percentile"]

log = logging.getLogger("syngrpo.synthesis.server")

STOP_RECANCEL_S = 1.0
"""How long :meth:`JobService.stop` waits for a cancelled worker before cancelling it again."""

DISK_FULL_ERROR = "the server's disk is full"
"""How a worker says a job's result could not be written (:mod:`.device_worker`): the job is re-queued, not failed."""

DISK_RETRY_FIRST_S = 0.5
DISK_RETRY_MAX_S = 60.0
"""The workers' wait before claiming again after a result write hit a full disk: 0.5 s, doubling to a minute."""


class WorkerPool(Protocol):
    """Workers that come and go (the ``ray`` backend's replicas): started and stopped with the service.

    A pool adds workers with :meth:`JobService.add_worker` and retires them with
    :meth:`JobService.retire_worker`; the queue, the job records and the files stay the service's.
    """

    async def start(self, service: JobService) -> None: ...

    async def stop(self) -> None: ...


def resolve_isolation(config: ServerConfig, registry: Registry | None) -> str:
    """``worker_isolation`` with ``auto`` decided: a process per worker, unless the plugins were handed over
    as a registry object (tests, embedding), which cannot be rebuilt in another process."""
    if config.worker_isolation != "auto":
        return config.worker_isolation
    return "thread" if registry is not None else "process"


class JobService(SubmissionIntake):
    """Store + queue + workers; every method runs on the event loop that called :meth:`start`."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None, *,
                 pool: WorkerPool | None = None) -> None:
        self.config = config
        if registry is not None and config.worker_isolation == "process":
            raise ValueError("worker_isolation: process cannot use a registry object (a worker process builds its "
                             "plugins from the installed ones and the config's plugins: list); use thread")
        if config.backend != "local" and pool is None:
            raise ConfigError(f"backend {config.backend!r} runs its workers through its own plugin "
                              "(`syngrpo serve` starts it); this job service only has local workers")
        self.isolation = resolve_isolation(config, registry)
        given_registry = registry
        if registry is None:
            registry = get_registry(load_plugin_modules(config.plugins)) if config.plugins else get_registry()
        self.registry = registry
        # Unknown names are configuration errors at start-up, not failed jobs later.
        for name in config.served_synthesizers():
            registry.get("synthesizers", name)
        registry.get("segmenters", config.segmenter)
        if config.label_segmenter is not None:
            registry.get("segmenters", config.label_segmenter)
        self.option_models = {name: job_options_model(registry.get("synthesizers", name).factory)
                              for name in config.served_synthesizers()}
        self.store = JobStore(config.data_dir)
        self._cond: asyncio.Condition | None = None
        self.pool = pool
        self.workers: list[Worker] = []
        self._next_worker = 0
        if pool is None:
            for dev in config.workers:
                name = f"worker-{self._next_worker}@{dev}"
                self.add_worker(dev, make_runner(config, dev, name, given_registry, self.isolation), name)
        self.rejected = 0
        self.storage_error: str | None = None  # why the last write failed on a full disk (None: fine)
        self.storage_refused = 0
        self.disk = DiskBudget(config, self.store)  # max_store_bytes and min_free_bytes at submission
        self.disk_retries = 0  # jobs put back in the queue because their result could not be written (full disk)
        self.fair = FairShare(config.fair_share_half_life_s)  # who runs next (:mod:`.fairness`)
        self._reserved = 0  # queue slots taken by submissions being written
        self._reserved_by_client: dict[str, int] = {}
        self._disk_retry_s = 0.0  # while > 0: a result write hit a full disk; workers wait this long to claim
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
        deleted = await sweep_safely(self)
        for w in self.workers:
            w.task = asyncio.create_task(w.run(), name=w.name)
        if self.pool is not None:
            await self.pool.start(self)
        self._sweeper = asyncio.create_task(retention_loop(self, deleted), name="syngrpo-retention")

    async def stop(self) -> None:
        """Cancel the workers, wait for them to end, put their running jobs back in the queue.

        A cancellation can be lost on its way (Python < 3.12's ``asyncio.wait_for`` swallowed one
        that arrived as the awaited call returned), and a worker that missed it would wait for jobs
        forever and hang the stop; so a worker still running after ``STOP_RECANCEL_S`` is cancelled
        again until it ends.
        """
        if self.pool is not None:
            try:
                await self.pool.stop()
            except Exception:  # noqa: BLE001 - the workers are stopped below all the same
                log.exception("stopping the worker pool failed")
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

    # -- workers

    def add_worker(self, device: str, runner: Runner, name: str | None = None) -> Worker:
        """A new worker on ``runner`` (started at once when the service runs)."""
        w = Worker(self._next_worker, device, self, runner, name)
        self._next_worker += 1
        self.workers.append(w)
        if self._cond is not None:
            w.task = asyncio.create_task(w.run(), name=w.name)
        return w

    async def retire_worker(self, worker: Worker) -> None:
        """Let a worker finish the batch at hand, take no other, stop its device and leave the list."""
        worker.retiring = True
        if self._cond is not None:
            await self._notify()  # a worker waiting for jobs wakes up and sees it retires
        if worker.task is not None:
            try:
                await worker.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - run() logged its own failure
                pass
        if worker in self.workers:
            self.workers.remove(worker)

    def add_listener(self, fn: Callable[[JobRecord], None]) -> None:
        """Call ``fn(job)`` (on the loop) whenever a job reaches a final state."""
        self._listeners.append(fn)

    # -- the disk budget (:class:`~.disk.DiskBudget`)

    def disk_refusal(self, need: int = 0) -> ApiError | None:
        """Why a submission needing ``need`` more bytes would be refused for disk (``None``: it fits)."""
        return self.disk.refusal(need)

    @property
    def store_full_refused(self) -> int:
        return self.disk.refused

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
        self._disk_retry_s = 0.0

    async def finish_durably(self, job_id: str, error: str | None) -> None:
        """:meth:`finish`, retried with back-off while the disk is full (the worker never dies of it).

        A job whose result could not be written because the disk is full is not failed: it goes
        back to the queue (the attempt not counted) and runs again once the workers' back-off
        (:meth:`next_batch`) has passed; a full disk is the server's trouble, not the job's.  A job a
        client deleted while it ran is deleted now (else the next retention sweep does it).
        """
        if error is not None and error.startswith(DISK_FULL_ERROR):
            if await self._requeue_durably(job_id, error):
                return
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

    async def _requeue_durably(self, job_id: str, error: str) -> bool:
        """Put a running job whose result hit a full disk back in the queue; False when it is not running
        any more or a client asked for it to go (then it finishes as usual)."""
        rec = self.store.get(job_id)
        if rec is None or rec.state != "running" or rec.cancel_requested:
            return False
        delay = 0.5
        while True:
            try:
                self.store.requeue([job_id])
                break
            except Exception as exc:
                if not is_storage_full(exc):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.disk_retries += 1
        self._disk_retry_s = min(DISK_RETRY_MAX_S, max(DISK_RETRY_FIRST_S, 2 * self._disk_retry_s))
        log.warning("job %s goes back to the queue: %s (tried again in %.0f s)", job_id, error, self._disk_retry_s)
        return True

    async def _notify(self) -> None:
        assert self._cond is not None, "JobService.start() was not awaited"
        async with self._cond:
            self._cond.notify_all()

    async def next_batch(self, worker: Worker) -> list[JobRecord]:
        """Wait for queued jobs and claim up to ``batch_size`` of one group for ``worker``.

        Which job goes first is the fair choice between clients (:mod:`.fairness`): the oldest job of
        the client that has used the workers least lately.  After a result write hit a full disk the
        workers wait (0.5 s doubling to a minute) before they claim again, so a job put back is not
        run again and again while the disk stays full.
        """
        assert self._cond is not None
        cfg = self.config
        delay = 0.5
        if self._disk_retry_s > 0 and self.storage_error is not None:
            await asyncio.sleep(self._disk_retry_s)  # then one try; a failed one doubles the wait
        async with self._cond:
            while True:
                if worker.retiring:
                    return []
                try:
                    jobs = self.store.claim(worker.name, cfg.batch_size, usage=self._usage())
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
            jobs += self.store.claim(worker.name, cfg.batch_size - len(jobs), group_key=jobs[0].group_key,
                                     usage=self._usage())
        return jobs

    def _usage(self) -> Callable[[str], float] | None:
        """What the store orders clients by when it picks the next job (``None``: first come, first served)."""
        return self.fair.usage if self.config.scheduling == "fair" else None

    async def requeue_lost(self, job_ids: list[str], why: str) -> None:
        """Jobs whose device died under them go back to the queue, as after a server crash: the attempt
        counts, a job lost ``max_attempts`` times fails, one cancelled meanwhile ends cancelled."""
        ended = self.store.requeue_lost(job_ids, self.config.max_attempts, why)
        for rec in ended:
            log.info("job %s (%s) %s: %s", rec.id, rec.key, rec.state, rec.error)
            self._tell(rec)
            if rec.delete_requested:
                await self.delete([rec.id])
        await self._notify()

    def finish(self, job_id: str, error: str | None) -> JobRecord | None:
        rec = self.store.finish(job_id, "failed" if error else "done", error=error)
        if error is None or "disk is full" not in error:
            self.storage_ok()
        if rec is None:
            return None
        if rec.seconds:
            self.fair.charge(rec.client, rec.seconds)
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
        """One retention sweep (:func:`.retention.retention_sweep`); returns how many jobs it deleted."""
        return await retention_sweep(self, now)

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

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and free what it holds: a queued one is deleted at once (row and files, leaving
        its tombstone), a running one is cancelled when its call returns and deleted then.

        Cancelling used to keep the row and files until retention (a day): a client could fill the
        disk by submitting and cancelling (issue 24, item 1).  Returns the job as it was cancelled.
        """
        rec = self.get(job_id)
        if rec.state in ("done", "failed"):
            raise ApiError(409, "already_final", f"job {job_id} is already {rec.state}")
        if rec.state == "cancelled":  # cancelled before this server deleted on cancel: free it now
            await self.delete([job_id])
            return rec
        outcome = await self.delete([job_id])
        if outcome.deleting:
            return outcome.deleting[0]
        if outcome.deleted:
            done = outcome.deleted[0]
            done.error = done.error or "cancelled"
            return done
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
        disk = None if self.storage_error else self.disk.refusal(self.disk.typical_need)
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
