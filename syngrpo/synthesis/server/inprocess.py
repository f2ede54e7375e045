"""The ``inprocess`` transport: the data server's job service inside the trainer, without HTTP.

Same queue, workers, batching, time-outs, checks and persistence as ``syngrpo serve`` (it runs
the very :class:`~syngrpo.synthesis.server.workers.JobService` on a background event loop), so a run can
be debugged in one process and then moved to a real server by changing ``transport:``.
Refusals (bad job, full queue) raise :class:`~syngrpo.synthesis.transport.TransportError` with the
server's error code in the message.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from syngrpo.hookspecs import hookimpl
from syngrpo.synthesis.server.clientside import BufferedTransport, LoopThread, ResultBuffer
from syngrpo.synthesis.transport import JobRejected, SynthesisJob, SynthesisResult, TransportError

log = logging.getLogger("syngrpo.synthesis.transport")


class InProcessTransport(BufferedTransport):
    """:class:`syngrpo.synthesis.transport.Transport` over an in-process job service.

    Options are :class:`~syngrpo.synthesis.server.config.ServerConfig` keys (``synthesizer``,
    ``segmenter``, ``workers``, ``queue_size``, ``batch_size``, ``job_timeout_s``, ...).  Without
    ``data_dir`` the job database lives in a temporary directory removed by :meth:`close`.
    ``registry`` replaces the installed plugins (tests).  While the queue is full, ``submit`` waits
    for room up to ``submit_timeout_s`` (0: refuse at once), as the ``aiohttp`` transport does.
    """

    def __init__(self, *, registry: Any = None, submit_timeout_s: float = 10.0, **config: Any) -> None:
        from syngrpo.config.io import validate
        from syngrpo.synthesis.server.config import ServerConfig
        from syngrpo.synthesis.server.workers import JobService

        self._tmp: str | None = None
        if config.get("data_dir") is None:
            self._tmp = tempfile.mkdtemp(prefix="syngrpo-inprocess-")
            config["data_dir"] = self._tmp
        # one process, so that a run can be stepped through in a debugger (workers in threads unless asked)
        config.setdefault("worker_isolation", "thread")
        self.config = validate(ServerConfig, config, source="inprocess transport options")
        self.submit_timeout_s = submit_timeout_s
        self._buffer = ResultBuffer()
        self._closed = False
        self._loop = LoopThread("syngrpo-inprocess")
        try:
            self.service = JobService(self.config, registry)
            self.service.add_listener(self._on_final)
            self._loop.call(self.service.start(), timeout=30)
        except BaseException:
            self._loop.stop()
            self._cleanup_tmp()
            raise

    # runs on the loop thread
    def _on_final(self, rec: Any) -> None:
        if not self._buffer.is_pending(rec.key):
            return
        image = None
        if rec.state == "done":
            try:
                image = self.service.store.result_path(rec.id).read_bytes()
            except OSError as exc:
                self._buffer.complete(SynthesisResult(rec.key, "failed", error=f"result file unreadable: {exc}",
                                                      server="inprocess", job_id=rec.id))
                return
        self._buffer.complete(SynthesisResult(rec.key, rec.state, image_png=image, error=rec.error,
                                              seconds=rec.seconds, server="inprocess", job_id=rec.id))

    def submit(self, job: SynthesisJob) -> str:
        from syngrpo.synthesis.server.validation import ApiError, SubmissionBody, check_bounds

        if self._closed:
            raise TransportError("the inprocess transport is closed")

        async def _submit() -> Any:
            body = SubmissionBody.model_validate(job.to_json(), strict=False)
            check_bounds(body, self.service.config)
            deadline = time.monotonic() + self.submit_timeout_s
            while True:
                try:
                    return await self.service.submit(body, client="inprocess")
                except ApiError as err:
                    wait = float(err.headers.get("Retry-After", "1"))
                    if err.status != 429 or time.monotonic() + wait > deadline:
                        raise
                    await asyncio.sleep(wait)

        known = self._buffer.is_pending(job.key)
        self._buffer.add(job.key)  # before the job can finish, so its result is never missed
        try:
            rec, _created = self._loop.call(_submit(), self.submit_timeout_s + 30)
        except ApiError as err:
            if not known:
                self._buffer.discard(job.key)
            kind = TransportError if err.status in (429, 503) else JobRejected
            raise kind(f"inprocess data server refused job {job.key!r}: {err.code}: {err.message}") from err
        except Exception as exc:  # pydantic errors for a malformed SynthesisJob
            if not known:
                self._buffer.discard(job.key)
            raise JobRejected(f"inprocess data server refused job {job.key!r}: {exc}") from exc
        self._buffer.add(job.key, rec.id)
        if rec.state in ("done", "failed", "cancelled"):  # an idempotent re-submit of a finished job
            self._loop.call(_call(self._on_final, rec), 5)
        return job.key

    def healthy(self) -> bool:
        if self._closed:
            return False

        async def _health() -> Any:
            return self.service.health()

        return self._loop.call(_health(), 5)["status"] == "ok"

    def cancel(self, key: str) -> None:
        """Cancel a submitted job (its result arrives as ``cancelled``)."""
        job_id = self._buffer.info(key)
        if job_id is None:
            return

        async def _cancel() -> None:
            from syngrpo.synthesis.server.validation import ApiError

            try:
                await self.service.cancel(job_id)
            except ApiError:
                pass

        self._loop.call(_cancel(), 5)

    def delete(self, results: Sequence[SynthesisResult]) -> None:
        """Delete finished jobs, rows and files, once the trainer kept what it needs (a running one is
        cancelled first).  Never raises: a failure is logged and retention deletes the jobs later."""
        ids = [r.job_id for r in results if r.job_id and r.server == "inprocess"]
        if not ids or self._closed:
            return
        try:
            self._loop.call(self.service.delete(ids), 30)
        except Exception:  # noqa: BLE001 - deleting is housekeeping; the run goes on
            log.exception("deleting %d collected job(s) failed; the server's retention will", len(ids))

    def stats(self) -> dict[str, Any]:
        """Client-side counts plus the service's queue depth (for the trainer's logs)."""

        async def _depth() -> int:
            return self.service.store.queued_count()

        out = super().stats()
        out["queue_depth"] = self._loop.call(_depth(), 5) if not self._closed else 0
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call(self.service.stop(), 30)
        except Exception:  # noqa: BLE001
            log.exception("stopping the inprocess job service failed")
        self._loop.stop()
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def inprocess(**options: Any) -> InProcessTransport:
    """The data server's pipeline in this process, without HTTP (debugging; same behaviour)."""
    return InProcessTransport(**options)


#: the data server runs inside this process: no URL or token, and the options are its config keys
#: (syngrpo.synthesis.connect; pre-flight checks them as a ServerConfig, less the class's own options)
inprocess.in_process = True  # type: ignore[attr-defined]
inprocess.options_from = "syngrpo.synthesis.server.inprocess:InProcessTransport"  # type: ignore[attr-defined]


@hookimpl
def register_transports(register):
    register("inprocess", inprocess)


