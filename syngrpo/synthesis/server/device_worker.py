"""The workers of the data server: one per device, one synthesis call at a time, each under a time-out.

Its own module because a worker is the one part of the server that runs off the event loop.  The
job service (:mod:`.workers`) hands a worker batches of queued jobs (:meth:`WorkerService.next_batch`)
and records their ends; the worker reads their inputs, has its device run the pipeline
(:mod:`.device`), writes the result files and reports each job's end.  Where the device runs is its
*runner*: a process of its own (:class:`~syngrpo.synthesis.server.worker_process.ProcessRunner`,
``worker_isolation: process``, what ``syngrpo serve`` runs), a thread of the server
(:class:`ThreadRunner`, ``thread``: tests and the ``inprocess`` transport) or a Ray replica (the
``ray`` backend's runner, same interface).  A call that raises fails its own jobs (a failing batch
is retried job by job inside :func:`syngrpo.synthesis.pipeline.run_pipeline`).

Over-long jobs: a job's options are bounded by what its synthesizer declares (checked at
submission), and a call runs under a deadline (:func:`syngrpo.synthesis.pipeline.job_deadline`) that
synthesizers check between units of work, so a call past its time-out normally stops by itself.
Its jobs fail at the time-out either way; only those jobs.  What happens to the call itself depends
on the runner.  A process (or replica) that has not returned within a grace is killed and started
afresh: the worker takes no job until its device is back.  A thread cannot be killed: the call is
abandoned and the worker goes on with a fresh thread; while ``max_hung_calls`` abandoned calls of
a worker are still running it takes no new jobs (``draining`` in ``/healthz``), so abandoned work
never piles up, and it takes jobs again as soon as one of them returns.

A device that dies during a call (a killed process, a replica lost with its node) loses no job:
its jobs go back to the queue, the attempt counted as a server crash's would be (failed after
``max_attempts``), and the worker starts its device again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from syngrpo.plugins import Registry
from syngrpo.synthesis.server.calls import CallTimeout, call_in_thread
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.device import DeviceError, DeviceJob, DeviceLost, DeviceModels, DeviceOutcome, DeviceSpec
from syngrpo.synthesis.server.files import atomic_write, is_storage_full
from syngrpo.synthesis.server.records import JobRecord
from syngrpo.synthesis.server.store import JobStore
from syngrpo.synthesis.server.worker_process import ProcessRunner

log = logging.getLogger("syngrpo.synthesis.server")


class WorkerService(Protocol):
    """What a worker asks of the job service (:class:`~syngrpo.synthesis.server.workers.JobService`)."""

    config: ServerConfig
    registry: Registry
    store: JobStore

    async def next_batch(self, worker: Worker) -> list[JobRecord]:
        """Wait for queued jobs and claim a batch of one group for ``worker`` (``[]``: the worker retires)."""

    async def finish_durably(self, job_id: str, error: str | None) -> None:
        """Record a job's end (``error`` ``None``: done), retried while the disk is full."""

    async def requeue_lost(self, job_ids: list[str], why: str) -> None:
        """Put the jobs of a device that died back in the queue (the attempt counts)."""

    def storage_problem(self, exc: BaseException) -> None:
        """Record that a write failed on a full disk."""


class Runner(Protocol):
    """Where a worker's device runs: a thread, a process, a Ray replica."""

    kind: str

    async def load(self, timeout: float) -> None:
        """(Re)start the device and build its plugins; an exception says why it cannot."""

    async def run(self, jobs: list[DeviceJob], timeout: float) -> list[DeviceOutcome]:
        """One batch; :class:`CallTimeout` past ``timeout``, :class:`DeviceLost` if the device died."""

    def alive(self) -> bool:
        """Whether the device can take a call now (a killed process cannot until ``load``)."""

    def shutdown(self) -> None:
        """Stop the device (the server stops, or the worker retires)."""

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` adds about this runner."""


class ThreadRunner:
    """The device in a thread of the server: each call in a fresh daemon thread, a hung one abandoned."""

    kind = "thread"

    def __init__(self, spec: DeviceSpec, name: str, registry: Registry | None = None) -> None:
        self.name = name
        self.models = DeviceModels(spec, registry)

    async def load(self, timeout: float) -> None:
        await call_in_thread(self.models.load, timeout=timeout, name=f"{self.name}-load")

    async def run(self, jobs: list[DeviceJob], timeout: float) -> list[DeviceOutcome]:
        return await call_in_thread(self.models.run, jobs, timeout=timeout, name=f"{self.name}-synth")

    def alive(self) -> bool:
        return True

    def shutdown(self) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"isolation": self.kind}


def describe(exc: BaseException) -> str:
    """``Type: message`` of a failure, whether it happened here or in a device's own process."""
    return str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"


class Worker:
    """One worker bound to one device: claims batches, has its runner run them, writes and reports results."""

    def __init__(self, index: int, device: str, service: WorkerService, runner: Runner, name: str | None = None
                 ) -> None:
        self.index = index
        self.device = device
        self.name = name or f"worker-{index}@{device}"
        self.service = service
        self.runner = runner
        self.state = "starting"
        self.error: str | None = None
        self.hung_calls = 0  # calls that ran past their time-out, ever
        self.lost_calls = 0  # calls whose device died under them, ever
        self.jobs_done = 0
        self.jobs_failed = 0
        self.abandoned: set[asyncio.Future[Any]] = set()  # threads past their time-out still running
        self.retiring = False  # set by a pool scaling down: finish the batch at hand, take no other
        self._returned: asyncio.Event | None = None
        self.current: list[str] = []
        self.task: asyncio.Task[None] | None = None

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "state": self.state, "error": self.error,
                "hung_calls": self.hung_calls, "abandoned_calls": len(self.abandoned), "running": len(self.current),
                "lost_calls": self.lost_calls, "jobs_done": self.jobs_done, "jobs_failed": self.jobs_failed,
                **self.runner.health()}

    async def _load(self) -> bool:
        self.state = "loading"
        try:
            await self.runner.load(self.service.config.load_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in /healthz; jobs go to other workers
            self.state = "broken"
            self.error = f"could not create the segmenter/synthesizer: {describe(exc)}"
            log.error("%s: %s", self.name, self.error)
            self.runner.shutdown()
            return False
        self.state, self.error = "ready", None
        return True

    async def run(self) -> None:
        try:
            if not await self._load():
                return
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or a dead database: say so in /healthz, do not vanish
            self.state = "broken"
            self.error = f"worker stopped: {type(exc).__name__}: {exc}"
            log.exception("%s stopped", self.name)
        finally:
            self.runner.shutdown()

    async def _loop(self) -> None:
        cfg = self.service.config
        self._returned = asyncio.Event()
        while not self.retiring:
            while len(self.abandoned) >= cfg.max_hung_calls:
                # Take no job while this many calls past their time-out still run: none piles up.
                self.state = "draining"
                self.error = (f"{len(self.abandoned)} call(s) past the time-out still running; "
                              "new jobs wait until one returns")
                self._returned.clear()
                await self._returned.wait()
            if not self.runner.alive() and not await self._load():
                return
            self.state, self.error = "ready", None
            jobs = await self.service.next_batch(self)
            if not jobs:  # retiring
                break
            self.current = [j.id for j in jobs]
            self.state = "busy"
            try:
                await self._process(jobs)
            finally:
                self.current = []
            self.state = "ready"
        self.state = "retired"

    def _abandon(self, call: asyncio.Future[Any]) -> None:
        self.abandoned.add(call)

        def returned(f: asyncio.Future[Any]) -> None:
            if not f.cancelled():
                f.exception()  # retrieved: a late DeadlineExceeded is expected, not an unhandled error
            self.abandoned.discard(f)
            log.info("%s: a call abandoned after its time-out has returned (%d still running)",
                     self.name, len(self.abandoned))
            if self._returned is not None:
                self._returned.set()

        call.add_done_callback(returned)

    async def _process(self, jobs: list[JobRecord]) -> None:
        cfg = self.service.config
        timeout = cfg.job_timeout_s * len(jobs)
        settle: asyncio.Future[Any] | None = None
        try:
            inputs = await asyncio.to_thread(self._inputs, jobs)
            outcomes = await self.runner.run(inputs, timeout)
            errors = await asyncio.to_thread(self._write, jobs, outcomes)
        except CallTimeout as exc:
            self.hung_calls += 1
            if self.runner.kind == "thread":
                self._abandon(exc.call)
            else:
                settle = exc.call  # the device returns within a grace or is killed; no job until then
            errors = [f"synthesis {exc} (job_timeout_s={cfg.job_timeout_s:g})"] * len(jobs)
            log.warning("%s: batch of %d %s", self.name, len(jobs), exc)
        except DeviceLost as exc:
            self.lost_calls += 1
            log.warning("%s: %s during a batch of %d; its jobs go back to the queue", self.name, exc, len(jobs))
            await self.service.requeue_lost([j.id for j in jobs], str(exc))
            self.state = "restarting"
            return
        except Exception as exc:  # noqa: BLE001 - e.g. creating an extra synthesizer failed
            if is_storage_full(exc):
                self.service.storage_problem(exc)
                errors = [f"the server's disk is full: {exc}"] * len(jobs)
            else:
                errors = [describe(exc)] * len(jobs)
            log.warning("%s: batch of %d failed: %s", self.name, len(jobs), errors[0])
        for job, error in zip(jobs, errors, strict=True):
            await self.service.finish_durably(job.id, error)
            if error is None:
                self.jobs_done += 1
            else:
                self.jobs_failed += 1
        if settle is not None:
            self.state = "draining"
            self.error = "a call past its time-out: waiting for the device to return or be restarted"
            await asyncio.wait((settle,))

    def _inputs(self, jobs: list[JobRecord]) -> list[DeviceJob]:
        store = self.service.store
        return [DeviceJob(job.id, store.input_path(job.id).read_bytes(), job.boxes, job.labels, job.description,
                          job.seed, dict(job.options), job.synthesizer) for job in jobs]

    def _write(self, jobs: list[JobRecord], outcomes: list[DeviceOutcome]) -> list[str | None]:
        """Write each done job's mask and result (atomically); returns an error (or None) per job."""
        store = self.service.store
        if len(outcomes) != len(jobs):
            return [f"the device returned {len(outcomes)} results for {len(jobs)} jobs"] * len(jobs)
        errors: list[str | None] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.error is not None or outcome.result_png is None or outcome.mask_png is None:
                errors.append(outcome.error or "synthesis produced no image")
                continue
            try:
                # never re-create the folder: a job deleted while it ran must not leave files behind
                atomic_write(store.mask_path(job.id), outcome.mask_png, make_parents=False)
                atomic_write(store.result_path(job.id), outcome.result_png, make_parents=False)
            except FileNotFoundError:
                errors.append("the job was deleted while it ran")
                continue
            except OSError as exc:
                if not is_storage_full(exc):
                    raise
                store.mask_path(job.id).unlink(missing_ok=True)
                self.service.storage_problem(exc)
                errors.append(f"the server's disk is full: {exc}")
                continue
            errors.append(None)
        return errors


def make_runner(config: ServerConfig, device: str, name: str, registry: Registry | None, isolation: str) -> Runner:
    """The runner of one local worker: its own process, or a thread of this one."""
    spec = DeviceSpec.from_config(config, device)
    if isolation == "process":
        return ProcessRunner(spec, name)
    return ThreadRunner(spec, name, registry)
