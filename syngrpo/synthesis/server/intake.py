"""A job's way in: the queue's admission rules and storing a new job (:class:`SubmissionIntake`).

Split out of :mod:`.workers` along the seam a reader looks for when a client is refused: whether a job
fits the queue (``queue_size`` in all, ``client_queue_share`` per client in a full queue), whether the
disk can take it and its result (:mod:`.disk`), whether it is an idempotent retry of a job already
stored (same key and content) or a conflict (same key, other content), and the slot and bytes it
reserves while its image is decoded, with no ``await`` between the check and the reservation so
concurrent submissions cannot all pass.  :class:`~.workers.JobService` is the one class that mixes it in.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from syngrpo.synthesis.server.files import atomic_write, is_storage_full
from syngrpo.synthesis.server.records import JobRecord
from syngrpo.synthesis.server.store import DuplicateKeyError, result_bytes_bound
from syngrpo.synthesis.server.validation import ApiError, Submission, SubmissionBody, fingerprint, validate_submission

if TYPE_CHECKING:
    from syngrpo.synthesis.server.config import ServerConfig
    from syngrpo.synthesis.server.disk import DiskBudget
    from syngrpo.synthesis.server.store import JobStore


class SubmissionIntake:
    """Admission and storing of new jobs; the state it reads is :class:`~.workers.JobService`'s."""

    config: ServerConfig
    store: JobStore
    disk: DiskBudget
    workers: list[Any]
    option_models: Any
    rejected: int
    storage_refused: int
    _reserved: int
    _reserved_by_client: dict[str, int]

    def retry_after_s(self) -> int:
        """A client's wait before a queue slot is likely free: one mean job time per busy worker slot."""
        times = self.store.recent_seconds(50)
        mean = sum(times) / len(times) if times else 1.0
        active = max(1, sum(w.state in ("ready", "busy") for w in self.workers))
        return max(1, min(600, math.ceil(mean / active)))

    def _queue_full(self, mine: int) -> ApiError:
        self.rejected += 1
        wait = self.retry_after_s()
        share = self.config.client_queue_limit()
        return ApiError(429, "queue_full",
                        f"the queue holds {self._queued_or_reserved()} jobs (queue_size {self.config.queue_size}), "
                        f"{mine} of them this client's (its share in a full queue: {share}); retry in {wait} s",
                        headers={"Retry-After": str(wait)})

    def _check_queue(self, client: str) -> None:
        """429 ``queue_full`` unless the job fits: below ``queue_size`` queued jobs in all, or, in a fuller
        queue, below this client's share (``client_queue_share`` of ``queue_size``) and ``2 × queue_size``
        in all.  So a client alone may fill the queue, and another arriving then still gets its share in."""
        cfg = self.config
        total = self._queued_or_reserved()
        if total < cfg.queue_size:
            return
        mine = self.store.queued_count(client) + self._reserved_by_client.get(client, 0)
        if mine < cfg.client_queue_limit() and total < 2 * cfg.queue_size:
            return
        raise self._queue_full(mine)

    async def submit(self, body: SubmissionBody, client: str = "") -> tuple[JobRecord, bool]:
        """Queue a job for ``client``; returns ``(job, created)``: an idempotent retry returns the existing job.

        ``client`` (:func:`~syngrpo.synthesis.server.admission.client_of`) is whom the job counts
        against: at most ``client_queue_share`` of the queue, and its share of the workers.
        """
        existing = self._existing(body)
        if existing is not None:
            return existing, False
        if self.workers and all(w.state == "broken" for w in self.workers):
            raise ApiError(503, "unavailable", "every worker of this server is broken (see /healthz); "
                           "submit to another server", headers={"Retry-After": "60"})
        self._check_queue(client)
        self.disk.check(0)
        sub: Submission = await asyncio.to_thread(validate_submission, body, self.config, self.option_models)
        existing = self._existing(body)  # a concurrent retry may have won while the image was decoded
        if existing is not None:
            return existing, False
        # Check and reserve a slot and its bytes with no await in between: concurrent submissions cannot all pass.
        self._check_queue(client)
        need = len(sub.png) + result_bytes_bound(sub.image.width, sub.image.height)  # the input now, its result later
        self.disk.check(need)
        self._reserved += 1
        self._reserved_by_client[client] = self._reserved_by_client.get(client, 0) + 1
        self.disk.reserved_bytes += need
        self.disk.typical_need = need
        try:
            return await self._store_new(body, sub, client)
        finally:
            self._reserved -= 1
            self.disk.reserved_bytes -= need
            left = self._reserved_by_client.pop(client, 1) - 1
            if left > 0:
                self._reserved_by_client[client] = left

    def _queued_or_reserved(self) -> int:
        return self.store.queued_count() + self._reserved

    async def _store_new(self, body: SubmissionBody, sub: Submission, client: str) -> tuple[JobRecord, bool]:
        job_id = uuid.uuid4().hex
        rec = JobRecord(
            id=job_id, key=sub.key, fingerprint=sub.fingerprint, state="queued", synthesizer=sub.synthesizer,
            group_key=sub.group_key, width=sub.image.width, height=sub.image.height, boxes=sub.boxes,
            labels=sub.labels, description=sub.description, options=sub.options, seed=sub.seed,
            created_at=time.time(), client=client,
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

