"""The trainer's side of online synthesis: send chosen descriptions, fold finished images into the pool.

Steps 5-6 of Syn-GRPO's workflow (paper §3.3.2, Figure 3): for each prompt of
the batch, the description picked by eq. 8 goes to the data server with the
image and its labelled boxes; when the server hands back a new image, the new
sample takes its source's place in the :class:`~syngrpo.data.pool.DataPool`, with
the source's labels (foreground consistency).

The data server is a separate service that may be slow, full, down or
restarted.  None of that stops training: a submission that no server takes
marks synthesis as *down* (training goes on with the samples the pool has, and
the run log says so); a health probe every ``health_interval`` seconds notices
when a server answers again, and synthesis resumes.  A failed job or one that
never returns (``job_timeout``) leaves the sample as it was.

Every finished job that comes back is deleted on its server once its image is in the run
directory (``synthesis.delete_collected``, when the transport has ``delete``): the server's disk
then holds only the jobs in flight.  A resumed run asks again for jobs it may have collected, and
deleted, after its checkpoint (the checkpoint's jobs in flight; in ``sync`` mode, the jobs of the
steps it redoes).  Such a job's image is still in the run directory, under a name that holds the
job's key and a digest of its content (``<key>.<digest>.png``, written atomically before the job
was deleted): the client takes it from there, so nothing is synthesized twice and a resume sees
the very bytes the first run saw.  A job whose file is not there was not deleted either, and its
server answers it as before; a server also answers a deleted key sent with the same content with a
fresh job (same seed, same image), so even a lost run directory costs time, not correctness.

Synthesis that never works is a misconfigured run: :mod:`syngrpo.synthesis.failure` stops it (or warns,
``synthesis.on_failure``) when it keeps failing during the run, and at its end when it produced nothing or
too little (:meth:`SynthesisClient.finish`).  A spawned server's deaths and restarts
(:class:`~syngrpo.synthesis.server.spawn.SupervisedServer`) go into the run log as they happen.

Job keys are the server's idempotency keys, so they must be what a server takes (letters, digits, ``_``
``.`` ``:`` ``-``, at most 128): :func:`job_key` maps a dataset id that is not (``coco/train2017/1.jpg``)
to one that is, keeping it unique with a digest of the id.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.config import SynthesisConfig
from syngrpo.data.pool import DataPool, PendingJob
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.task import Task
from syngrpo.synthesis.failure import FailurePolicy, SynthesisFailure
from syngrpo.synthesis.server.validation import KEY_RE
from syngrpo.synthesis.transport import (
    JobRejected,
    SynthesisJob,
    SynthesisResult,
    Transport,
    TransportError,
    Unauthorized,
)
from syngrpo.types import Sample

log = logging.getLogger(__name__)


__all__ = ["Replacement", "StepSynthesis", "SynthesisClient", "SynthesisFailure", "job_key", "job_seed",
           "png_bytes"]  # SynthesisFailure: its import path before synthesis.failure

@dataclass
class Replacement:
    """A synthesized sample that entered the pool (for the gallery and the logs)."""

    job: PendingJob
    sample: Sample


@dataclass
class StepSynthesis:
    """What happened to synthesis during one step (the ``synthesis/*`` metrics)."""

    submitted: int = 0
    skipped_busy: int = 0
    skipped_down: int = 0
    done: int = 0
    failed: int = 0
    stale: int = 0
    expired: int = 0
    wait_seconds: float = 0.0
    replacements: list[Replacement] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


def job_key(run_tag: str, step: int, origin_id: str) -> str:
    """The job key of (run, step, sample): ``<run tag>-<step>-<id>`` when a server takes that as it is, else
    the same with every character a key may not hold replaced (``/`` -> ``_``, no ``..``), cut to fit, and a
    digest of the id appended, so two ids never share a key (``coco/1.jpg`` and ``coco_1.jpg`` differ)."""
    raw = f"{run_tag}-{step}-{origin_id}"
    if KEY_RE.fullmatch(raw) and ".." not in raw:
        return raw
    safe = re.sub(r"\.(?=\.)", "_", _UNSAFE.sub("_", raw))
    digest = hashlib.sha256(str(origin_id).encode("utf-8")).hexdigest()[:16]
    return f"{safe[:128 - 17].rstrip('.')}-{digest}"


def job_seed(run_seed: int, step: int, origin_id: str) -> int:
    """A synthesis seed fixed by (run seed, step, sample): resubmission and reruns ask for the same image."""
    return zlib.crc32(f"{run_seed}/{step}/{origin_id}".encode()) & 0x7FFFFFFF


def png_bytes(path: str) -> tuple[bytes, int, int]:
    """An image file as the PNG bytes a synthesis job carries, with its width and height."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "PNG" and im.mode == "RGB":
            # already what the server takes: send the file's bytes, no decode and re-encode
            return Path(path).read_bytes(), im.width, im.height
        rgb = im.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, "PNG")
        return buf.getvalue(), rgb.width, rgb.height


class SynthesisClient:
    """Submits jobs through a :class:`~syngrpo.synthesis.transport.Transport` and routes results into a pool."""

    def __init__(
        self,
        transport: Transport,
        pool: DataPool,
        task: Task,
        cfg: SynthesisConfig,
        out_dir: str | Path,
        *,
        run_seed: int = 0,
        message: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.pool = pool
        self.task = task
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.run_seed = run_seed
        self.message = message or log.info
        self.clock = clock
        self.healthy = True
        self._last_probe = -float("inf")
        #: a spawned server's supervisor (``drain_events``, ``restarts``), set by the trainer
        self.server: Any = None
        self.failures = FailurePolicy(cfg, self.message, clock)  # synthesis.on_failure (synthesis/failure.py)
        self._unauthorized: str | None = None
        #: key -> digest of the job's content (names the image file; see the module doc)
        self._digests: dict[str, str] = {}
        #: jobs whose image the run directory already holds (a resumed run asked for them again)
        self._local: list[SynthesisResult] = []

    @property
    def server_restarts(self) -> int:
        return int(getattr(self.server, "restarts", 0) or 0)

    # ---- health -----------------------------------------------------------------------
    def _mark_down(self, why: str) -> None:
        if self.healthy:
            self.message(f"data server unavailable ({why}): training continues on the pool's current samples")
        self.healthy = False
        self._last_probe = self.clock()

    def check_health(self) -> bool:
        """While marked down, probe the server every ``health_interval`` seconds; say when it is back."""
        if self.healthy:
            return True
        now = self.clock()
        if now - self._last_probe < self.cfg.health_interval:
            return False
        self._last_probe = now
        try:
            ok = bool(self.transport.healthy())
        except Exception as exc:  # a probe never crashes training
            log.debug("health probe failed: %s", exc)
            ok = False
        if ok:
            self.healthy = True
            self.message("data server is back: synthesis resumes")
            self.resubmit_in_flight()
        return self.healthy

    # ---- submitting -------------------------------------------------------------------
    def _job_for(self, pending: PendingJob) -> SynthesisJob:
        base = pending.base_sample()
        png, _, _ = png_bytes(base.image)
        boxes = [tuple(float(v) for v in b) for b in self.task.foreground_boxes(base)]
        return SynthesisJob(
            key=pending.key,
            image_png=png,
            boxes=boxes,  # type: ignore[arg-type]
            labels=self._labels_for(base, len(boxes)),
            description=pending.description,
            options=dict(self.cfg.job_options),
            seed=pending.seed,
        )

    def _labels_for(self, sample: Sample, n_boxes: int) -> list[str]:
        """The task's text label of each foreground box (:meth:`syngrpo.perception.task.Task.foreground_labels`)."""
        labels = [str(v) for v in self.task.foreground_labels(sample)]
        if len(labels) != n_boxes:
            raise ValueError(f"task {self.task.name!r}: foreground_labels gave {len(labels)} labels for "
                             f"{n_boxes} foreground boxes of sample {sample.id!r}")
        return labels

    def submit(self, step: int, epoch: int, chosen: Sequence[tuple[Sample, str]], report: StepSynthesis) -> list[str]:
        """Send one job per (sample, description) without waiting; returns the keys that went out."""
        keys: list[str] = []
        # Asynchronous mode does not even wait for the server's acknowledgement when the transport can
        # say "no server took it" later (a refused result); the Table 5 profile put ~5 ms per job there.
        nowait = getattr(self.transport, "submit_nowait", None)
        send = nowait if self.cfg.mode == "async" and callable(nowait) else self.transport.submit
        for sample, description in chosen:
            if not self.check_health():
                report.skipped_down += 1
                continue
            origin = sample.origin_id
            if not self.pool.can_submit(origin, self.cfg.max_in_flight):
                report.skipped_busy += 1
                continue
            base = self.pool.synthesis_base(origin)
            pending = PendingJob(key=job_key(self.pool.run_tag, step, origin), origin_id=origin, base=base.to_dict(),
                                 description=description, seed=job_seed(self.run_seed, step, origin), step=step,
                                 submitted_at=self.clock(), epoch=epoch)
            try:
                job = self._job_for(pending)
            except (OSError, ValueError) as exc:
                report.errors.append(f"{origin}: cannot build job: {exc}")
                continue
            self.pool.track(pending)
            if self._kept_already(pending, job):  # collected before a crash: nothing to ask a server
                keys.append(pending.key)
                report.submitted += 1
                continue
            try:
                send(job)
            except JobRejected as exc:  # this job's content, not the servers: the others still go
                self.pool.take(pending.key)  # submitted and failed, as if the server had failed it
                self._digests.pop(pending.key, None)
                report.submitted += 1
                report.failed += 1
                self.pool.counters.failed += 1
                report.errors.append(f"{origin}: rejected: {exc}")
                continue
            except TransportError as exc:
                self.pool.untrack(pending.key)
                self._digests.pop(pending.key, None)
                report.skipped_down += 1
                if isinstance(exc, Unauthorized):
                    self._unauthorized = str(exc)
                self._mark_down(str(exc))
                continue
            keys.append(pending.key)
            report.submitted += 1
        return keys

    def resubmit_in_flight(self) -> int:
        """Ask again for every job the pool still waits on (after a resume or an outage); keys are idempotent."""
        sent = 0
        for pending in list(self.pool.in_flight.values()):
            try:
                job = self._job_for(pending)
                if not self._kept_already(pending, job):
                    self.transport.submit(job)
                pending.submitted_at = self.clock()  # the job timeout counts from the new submission
                sent += 1
            except JobRejected as exc:
                self.pool.take(pending.key)
                self.pool.counters.failed += 1
                log.warning("data server rejected resubmitted job %s: %s", pending.key, exc)
            except TransportError as exc:
                if isinstance(exc, Unauthorized):
                    self._unauthorized = str(exc)
                self._mark_down(str(exc))
                break
            except (OSError, ValueError) as exc:
                log.warning("cannot resubmit job %s: %s", pending.key, exc)
        return sent

    # ---- the run directory's copies ---------------------------------------------------
    def _kept_path(self, pending: PendingJob, digest: str) -> Path:
        return self.out_dir / _safe(pending.origin_id) / f"{_safe(pending.key)}.{digest[:16]}.png"

    def _kept_already(self, pending: PendingJob, job: SynthesisJob) -> bool:
        """Whether this very job (key and content) was collected into the run directory before; if so, its
        result is queued for the next collection instead of asking a server (which may have deleted it)."""
        digest = _digest(job)
        self._digests[pending.key] = digest
        path = self._kept_path(pending, digest)
        try:
            png = path.read_bytes()
        except OSError:
            return False
        self._local.append(SynthesisResult(pending.key, "done", image_png=png, server="run-dir"))
        return True

    def _take_local(self) -> list[SynthesisResult]:
        out, self._local = self._local, []
        return out

    # ---- collecting -------------------------------------------------------------------
    def collect(self, report: StepSynthesis) -> None:
        """Fold every finished job into the pool (never waits); abandon jobs past ``job_timeout``."""
        results = self._take_local()
        try:
            results += self.transport.poll()
        except Exception as exc:  # a transport hiccup never crashes training
            self._mark_down(f"poll failed: {exc}")
        self._absorb(results, report)
        self._release(results)
        for late in self.pool.expire(self.clock(), self.cfg.job_timeout):
            self._digests.pop(late.key, None)
            report.expired += 1
        self._account(report)

    # ---- failure policy -------------------------------------------------------------------
    def _account(self, report: StepSynthesis) -> None:
        """End of a step: log the server's restarts, then stop or warn if synthesis keeps failing."""
        if self.server is not None and hasattr(self.server, "drain_events"):
            for event in self.server.drain_events():
                self.message(event)
        unauthorized, self._unauthorized = self._unauthorized, None
        self.failures.step(report, down=report.skipped_down > 0 or not self.healthy, unauthorized=unauthorized)

    def finish(self) -> None:
        """End of the run: stop (non-zero exit) or warn when synthesis produced nothing or too little
        (:meth:`~syngrpo.synthesis.failure.FailurePolicy.finish`; call it once the last checkpoint is saved)."""
        self.failures.finish(self.pool.counters, len(self.pool.in_flight))

    def wait(self, keys: Sequence[str], report: StepSynthesis) -> None:
        """Synchronous mode (Table 5 ablation): block until this step's jobs finish or ``sync_timeout`` passes."""
        t0 = time.perf_counter()
        results = self._take_local()
        local = {r.key for r in results}
        remote = [k for k in keys if k not in local]
        if remote:
            try:
                results += self.transport.wait(remote, self.cfg.sync_timeout)
            except Exception as exc:
                self._mark_down(f"wait failed: {exc}")
        report.wait_seconds += time.perf_counter() - t0
        self._absorb(results, report)
        self._release(results)
        self.collect(report)

    def _release(self, results: Sequence[SynthesisResult]) -> None:
        """Delete on the server every finished job handed over, now that :meth:`_absorb` has written what
        the run keeps (failed, stale and unknown ones too: nobody will ask for them again)."""
        if not self.cfg.delete_collected or not results:
            return
        delete = getattr(self.transport, "delete", None)
        if not callable(delete):
            return
        finished = [r for r in results if not r.refused]
        if not finished:
            return
        try:
            delete(finished)
        except Exception as exc:  # housekeeping never stops training; the server's retention deletes them
            log.debug("deleting %d collected job(s) failed: %s", len(finished), exc)

    def _absorb(self, results: Sequence[SynthesisResult], report: StepSynthesis) -> None:
        # Deterministic order whatever order results arrived in: by submission step, then key.
        known = []
        for result in results:
            job = self.pool.take(result.key)
            if job is not None:
                known.append((job, result))
        known.sort(key=lambda jr: (jr[0].step, jr[0].key))
        for job, result in known:
            # a failed job, or a fire-and-forget one no server took (``refused``; the transport's next
            # submission raises, which marks synthesis down): the sample stays as it was
            if result.state != "done" or not result.image_png:
                report.failed += 1
                self.pool.counters.failed += 1
                report.errors.append(f"{job.origin_id}: {result.state}: {result.error or 'no image'}")
                continue
            try:
                sample = self._synthesized_sample(job, result.image_png)
            except (OSError, ValueError) as exc:
                report.failed += 1
                self.pool.counters.failed += 1
                report.errors.append(f"{job.origin_id}: unreadable image: {exc}")
                continue
            report.done += 1
            self.pool.counters.done += 1
            if self.pool.replace(job.origin_id, sample, base_generation=job.base_generation):
                report.replacements.append(Replacement(job, sample))
            else:
                report.stale += 1

    def _synthesized_sample(self, job: PendingJob, png: bytes) -> Sample:
        """The new sample: the base's labels on the new image (mapped when the server changed the size)."""
        from PIL import Image

        base = job.base_sample()
        with Image.open(io.BytesIO(png)) as im:
            width, height = im.size  # the header only: the server checked the image, its bytes are stored as they are
            is_png = im.format == "PNG"
        digest = self._digests.pop(job.key, None)
        if digest is None:  # not sent by this process (a transport's late result): name it by its content anyway
            try:
                digest = _digest(self._job_for(job))
            except (OSError, ValueError):
                digest = "0" * 16
        path = self._kept_path(job, digest)
        if not path.is_file():
            if not is_png:
                with Image.open(io.BytesIO(png)) as im:
                    buf = io.BytesIO()
                    im.save(buf, "PNG")
                    png = buf.getvalue()
            _write_atomically(path, png)
        sample = base
        if (width, height) != (base.width, base.height):
            sample = self.task.transform_sample(
                base, ImageTransform.resize(base.width, base.height, width, height), str(path)
            )
        meta: dict[str, Any] = {**base.meta, "synthesis": {"key": job.key, "step": job.step,
                                                             "base_id": base.id}}
        return sample.evolve(
            id=f"{job.origin_id}~{job.step}",
            image=str(path),
            width=width,
            height=height,
            source_id=job.origin_id,
            generation=job.base_generation + 1,
            description=job.description,
            meta=meta,
        )

    def exchange(self, step: int, epoch: int, chosen: Sequence[tuple[Sample, str]], report: StepSynthesis) -> None:
        """One step's traffic: submit the ``chosen`` (sample, description) pairs, then fold into the pool
        what finished: this step's own jobs, waited for (``sync``), or whatever came back (``async``)."""
        keys = self.submit(step, epoch, chosen, report)
        if self.cfg.mode == "sync":
            self.wait(keys, report)
        else:
            self.collect(report)
        for err in report.errors[:3]:
            log.debug("synthesis: %s", err)

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception as exc:  # pragma: no cover - closing never fails a run
            log.debug("closing transport: %s", exc)


def _digest(job: SynthesisJob) -> str:
    """A digest of everything a job asks for (what a server's idempotency fingerprint covers); the image's
    bytes are hashed as they are, not as base64 in JSON (this runs for every submission)."""
    fields = {"key": job.key, "boxes": [list(b) for b in job.boxes], "labels": list(job.labels),
              "description": job.description, "options": dict(job.options), "seed": job.seed}
    h = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    h.update(job.image_png)
    return h.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """The file is complete or absent, never half written: it is what a resumed run trusts instead of the
    server's copy, which is deleted once this returns.  Durable across a process crash (a killed trainer),
    as the checkpoints are; not fsynced, as they are not (one fsync per collected job would cost steps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))[:80]
