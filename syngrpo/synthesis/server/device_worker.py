"""The workers of the data server: one per device, one synthesis call at a time, each under a time-out.

Its own module because a worker is the one part of the server that runs off the event loop:
synthesis runs in the worker's own thread, so the loop keeps answering while a GPU works.  The
job service (:mod:`.workers`) hands a worker batches of queued jobs (:meth:`WorkerService.next_batch`)
and records their ends; the worker creates its segmenter and synthesizers on its device, runs the
pipeline and writes the result files.  A call that raises fails its own jobs (a failing batch is
retried job by job inside :func:`syngrpo.synthesis.pipeline.run_pipeline`).

Over-long jobs: a job's options are bounded by what its synthesizer declares (checked at
submission), and a call runs under a deadline (:func:`syngrpo.synthesis.pipeline.job_deadline`) that
synthesizers check between units of work, so a call past its time-out normally stops by itself.
Its jobs fail at the time-out either way; only those jobs.  A call that ignores the deadline is
abandoned (Python cannot kill a thread) and the worker goes on with a fresh thread; while
``max_hung_calls`` abandoned calls of a worker are still running it takes no new jobs
(``draining`` in ``/healthz``), so abandoned work never piles up, and it takes jobs again as soon
as one of them returns.  Why threads and not a killable subprocess: GPU models live in the
worker's process (a subprocess per call would reload them), and with the deadline the built-in
synthesizers stop within one unit of work of their time-out.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any, Protocol

from PIL import Image

from syngrpo.plugins import Registry
from syngrpo.synthesis.pipeline import PipelineItem, run_pipeline
from syngrpo.synthesis.server.calls import CallTimeout, call_in_thread, make_plugin
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.files import atomic_write, is_storage_full
from syngrpo.synthesis.server.records import JobRecord
from syngrpo.synthesis.server.store import JobStore

log = logging.getLogger("syngrpo.synthesis.server")


class WorkerService(Protocol):
    """What a worker asks of the job service (:class:`~syngrpo.synthesis.server.workers.JobService`)."""

    config: ServerConfig
    registry: Registry
    store: JobStore

    async def next_batch(self, worker: Worker) -> list[JobRecord]:
        """Wait for queued jobs and claim a batch of one group for ``worker``."""

    async def finish_durably(self, job_id: str, error: str | None) -> None:
        """Record a job's end (``error`` ``None``: done), retried while the disk is full."""

    def storage_problem(self, exc: BaseException) -> None:
        """Record that a write failed on a full disk."""


class Worker:
    """One worker bound to one device: its own segmenter and synthesizers, one call at a time."""

    def __init__(self, index: int, device: str, service: WorkerService) -> None:
        self.index = index
        self.device = device
        self.name = f"worker-{index}@{device}"
        self.service = service
        self.state = "starting"
        self.error: str | None = None
        self.hung_calls = 0  # calls that ran past their time-out, ever
        self.abandoned: set[asyncio.Future[Any]] = set()  # of those, the ones whose thread still runs
        self._returned: asyncio.Event | None = None
        self.current: list[str] = []
        self._segmenter: Any = None
        self._synthesizers: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "state": self.state, "error": self.error,
                "hung_calls": self.hung_calls, "abandoned_calls": len(self.abandoned), "running": len(self.current)}

    # -- plugin objects (created in the worker's thread: loading a model takes time)

    def _segmenter_obj(self) -> Any:
        if self._segmenter is None:
            cfg = self.service.config
            self._segmenter = make_plugin(self.service.registry, "segmenters", cfg.segmenter,
                                          cfg.segmenter_options, self.device)
        return self._segmenter

    def _synthesizer_obj(self, name: str) -> Any:
        if name not in self._synthesizers:
            opts = self.service.config.served_synthesizers()[name]
            self._synthesizers[name] = make_plugin(self.service.registry, "synthesizers", name, opts, self.device)
        return self._synthesizers[name]

    def _load_default(self) -> None:
        self._segmenter_obj()
        self._synthesizer_obj(self.service.config.synthesizer)

    def _run_batch(self, jobs: list[JobRecord]) -> list[str | None]:
        """Runs in the worker's thread: pipeline, then result files; returns an error (or None) per job."""
        store = self.service.store
        cfg = self.service.config
        items = []
        for job in jobs:
            with Image.open(store.input_path(job.id)) as im:
                image = im.convert("RGB")
            items.append(PipelineItem(image, [tuple(b) for b in job.boxes], job.labels, job.description,
                                      job.seed, dict(job.options)))
        outcomes = run_pipeline(items, segmenter=self._segmenter_obj(),
                                synthesizer=self._synthesizer_obj(jobs[0].synthesizer),
                                mask_threshold=cfg.mask_threshold,
                                min_foreground_fraction=cfg.min_foreground_fraction,
                                min_label_coverage=cfg.min_label_coverage,
                                max_label_edge_gap=cfg.max_label_edge_gap)
        errors: list[str | None] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not outcome.ok:
                errors.append(outcome.error or "synthesis produced no image")
                continue
            assert outcome.image is not None and outcome.keep_mask is not None
            try:
                # never re-create the folder: a job deleted while it ran must not leave files behind
                atomic_write(store.mask_path(job.id), _png(outcome.keep_mask), make_parents=False)
                atomic_write(store.result_path(job.id), _png(outcome.image), make_parents=False)
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

    async def run(self) -> None:
        cfg = self.service.config
        self.state = "loading"
        try:
            await call_in_thread(self._load_default, timeout=cfg.load_timeout_s, name=f"{self.name}-load")
        except Exception as exc:  # noqa: BLE001 - reported in /healthz; jobs go to other workers
            self.state = "broken"
            self.error = f"could not create the segmenter/synthesizer: {type(exc).__name__}: {exc}"
            log.error("%s: %s", self.name, self.error)
            return
        self.state = "ready"
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or a dead database: say so in /healthz, do not vanish
            self.state = "broken"
            self.error = f"worker stopped: {type(exc).__name__}: {exc}"
            log.exception("%s stopped", self.name)

    async def _loop(self) -> None:
        cfg = self.service.config
        self._returned = asyncio.Event()
        while True:
            while len(self.abandoned) >= cfg.max_hung_calls:
                # Take no job while this many calls past their time-out still run: none piles up.
                self.state = "draining"
                self.error = (f"{len(self.abandoned)} call(s) past the time-out still running; "
                              "new jobs wait until one returns")
                self._returned.clear()
                await self._returned.wait()
            self.state, self.error = "ready", None
            jobs = await self.service.next_batch(self)
            self.current = [j.id for j in jobs]
            self.state = "busy"
            try:
                await self._process(jobs)
            finally:
                self.current = []
            self.state = "ready"

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
        try:
            errors = await call_in_thread(self._run_batch, jobs, timeout=timeout, name=f"{self.name}-synth")
        except CallTimeout as exc:
            self.hung_calls += 1
            self._abandon(exc.call)
            errors = [f"synthesis {exc} (job_timeout_s={cfg.job_timeout_s:g})"] * len(jobs)
            log.warning("%s: batch of %d %s", self.name, len(jobs), exc)
        except Exception as exc:  # noqa: BLE001 - e.g. creating an extra synthesizer failed
            if is_storage_full(exc):
                self.service.storage_problem(exc)
                errors = [f"the server's disk is full: {exc}"] * len(jobs)
            else:
                errors = [f"{type(exc).__name__}: {exc}"] * len(jobs)
            log.warning("%s: batch of %d failed: %s", self.name, len(jobs), errors[0])
        for job, error in zip(jobs, errors, strict=True):
            await self.service.finish_durably(job.id, error)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
