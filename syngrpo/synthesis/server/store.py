"""Jobs in SQLite, images on disk: what a restart (even after SIGKILL) must not lose.

A job is acknowledged only after its input image is on disk and its row is committed, and it
is ``done`` only after its result files are on disk; so after a crash every acknowledged job is
either still queued, re-queued (it was running), or finished with its files in place.

Layout under ``data_dir``: ``jobs.sqlite3`` and ``jobs/<id>/{input,result,mask}.png``.
The database runs in WAL mode with ``synchronous=NORMAL``: durable across a process crash;
an operating-system crash or power loss may lose the last commits.

This module is the transactions (:class:`JobStore`): submit, claim, finish, cancel, delete,
recover.  What they rest on has a module each: the tables and how the file is opened
(:mod:`.database`), the job records they return (:mod:`.records`), and the rules for the files
(:mod:`.files`: atomic writes, the store's lock, a full disk told apart).

Deleting a job is two steps in this order: one transaction removes its row and writes its
tombstone, then its folder is removed.  A crash in between leaves a folder without a row, which
the start-up :meth:`JobStore.sweep` removes; never a row whose files are gone.  Each row records
the bytes of its files (``bytes``, re-read from the files at start-up), so the store's size is
known without walking the disk on every submission.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from syngrpo.synthesis.server.database import WAL_SIZE_LIMIT, open_database
from syngrpo.synthesis.server.files import (
    LOCK_FILE,
    RESULT_BYTES_PER_PIXEL,
    RESULT_OVERHEAD_BYTES,
    StoreError,
    atomic_write,
    folder_bytes,
    is_storage_full,
    lock_store,
    remove_tmp_files,
    result_bytes_bound,
)
from syngrpo.synthesis.server.records import (
    DELETE_REASONS,
    FINAL_STATES,
    STATES,
    DeleteOutcome,
    JobRecord,
    Tombstone,
)

# the records, the disk rules and the tables were split out of this module; these paths stay importable
__all__ = [
    "DELETE_REASONS", "FINAL_STATES", "LOCK_FILE", "STATES", "WAL_SIZE_LIMIT", "DeleteOutcome", "DuplicateKeyError",
    "JobRecord", "JobStore", "StoreError", "Tombstone", "atomic_write", "is_storage_full", "lock_store",
    "result_bytes_bound",
]

class DuplicateKeyError(Exception):
    """A job with this idempotency key exists already."""


class JobStore:
    """The jobs table and the image files; safe to call from several threads (one lock)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.db_path = self.data_dir / "jobs.sqlite3"
        self._lock = threading.RLock()
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = lock_store(self.data_dir)
        except OSError as exc:
            raise StoreError(f"cannot use {self.data_dir} as the job store: {exc.strerror or exc} "
                             f"({type(exc).__name__}); give data_dir a writable directory") from None
        try:
            self._db = open_database(self.db_path)
        except sqlite3.Error as exc:
            self._unlock()
            raise StoreError(f"cannot open the job database {self.db_path}: {exc}; "
                             "give data_dir a writable directory") from None
        self._files_bytes = int(self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM jobs").fetchone()[0])
        #: job folders whose removal did not finish (a file appeared meanwhile): tried again by each sweep
        self.leftover_dirs: set[str] = set()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._unlock()

    def remove_job_files(self, job_id: str) -> bool:
        """Delete a job's folder; whether it is gone (else it is kept in :attr:`leftover_dirs` to try again).

        Only for a job without a row: a submission that could not be committed, or a deleted job.
        """
        folder = self.job_dir(job_id)
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            with self._lock:
                self.leftover_dirs.add(job_id)
            return False
        with self._lock:
            self.leftover_dirs.discard(job_id)
        return True

    def retry_leftovers(self) -> int:
        """Remove again the folders of deleted jobs whose first removal left something; returns how many went."""
        with self._lock:
            todo = [i for i in self.leftover_dirs if self._db.execute(
                "SELECT 1 FROM jobs WHERE id = ?", (i,)).fetchone() is None]
        return sum(self.remove_job_files(i) for i in todo)

    def sweep(self) -> tuple[int, int]:
        """At start-up: remove ``.tmp`` files and job folders without a row (a crash or a full disk
        between writing a job's input and committing it, or between deleting a job's row and its
        folder), and re-read every row's ``bytes`` from its files; returns ``(tmp files, orphan folders)``."""
        tmp_files = remove_tmp_files(self.jobs_dir)
        with self._lock:
            known = {r[0]: r[1] for r in self._db.execute("SELECT id, bytes FROM jobs")}
        orphans = 0
        sizes: dict[str, int] = {}
        for d in self.jobs_dir.iterdir():
            if not d.is_dir():
                continue
            if d.name not in known:
                shutil.rmtree(d, ignore_errors=True)
                orphans += 1
            else:
                sizes[d.name] = folder_bytes(d)
        changed = [(sizes.get(i, 0), i) for i, b in known.items() if sizes.get(i, 0) != b]
        with self._lock:
            if changed:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("UPDATE jobs SET bytes = ? WHERE id = ?", changed)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            self._files_bytes = int(self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM jobs").fetchone()[0])
        return tmp_files, orphans

    # ------------------------------------------------------------------ size

    def files_bytes(self) -> int:
        """Bytes of the job files the rows account for (kept up to date by every insert, finish and delete)."""
        with self._lock:
            return self._files_bytes

    def database_bytes(self) -> int:
        """Bytes of ``jobs.sqlite3`` and its WAL and shared-memory files."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.db_path}{suffix}").st_size
            except OSError:
                pass
        return total

    def bytes_used(self) -> int:
        """The store's size on disk: job files and database."""
        return self.files_bytes() + self.database_bytes()

    def pending_result_bytes(self) -> int:
        """What the results of queued and running jobs may still add: :func:`result_bytes_bound` of each."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(width * height), 0), COALESCE(SUM(height), 0), COUNT(*) FROM jobs "
                "WHERE state IN ('queued', 'running')").fetchone()
        pixels, rows, jobs = int(row[0]), int(row[1]), int(row[2])
        return RESULT_BYTES_PER_PIXEL * pixels + 2 * rows + RESULT_OVERHEAD_BYTES * jobs

    def job_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def counters(self) -> dict[str, int]:
        """Totals that outlive deleted rows (``deleted_<state>``, ``deleted_by_<reason>``)."""
        with self._lock:
            return {r["name"]: int(r["value"]) for r in self._db.execute("SELECT name, value FROM counters")}

    # ------------------------------------------------------------------ files

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def input_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "input.png"

    def result_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.png"

    def mask_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "mask.png"

    # ------------------------------------------------------------------ rows

    def _row(self, row: sqlite3.Row | None) -> JobRecord | None:
        if row is None:
            return None
        req = json.loads(row["request"])
        return JobRecord(
            id=row["id"], key=row["key"], fingerprint=row["fingerprint"], state=row["state"],
            synthesizer=row["synthesizer"], group_key=row["group_key"], width=row["width"], height=row["height"],
            boxes=req["boxes"], labels=req["labels"], description=req["description"], options=req["options"],
            seed=req["seed"], created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], seconds=row["seconds"], error=row["error"], attempts=row["attempts"],
            cancel_requested=bool(row["cancel_requested"]), worker=row["worker"], seq=row["seq"],
            bytes=int(row["bytes"] or 0), delete_requested=bool(row["delete_requested"]),
            client=row["client"] or "",
        )

    def insert(self, rec: JobRecord) -> JobRecord:
        """Commit a new queued job (``rec.bytes``: its input file's size); raises :class:`DuplicateKeyError`
        if its key exists."""
        request = json.dumps({"boxes": rec.boxes, "labels": rec.labels, "description": rec.description,
                              "options": rec.options, "seed": rec.seed})
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO jobs (id, key, fingerprint, state, synthesizer, group_key, width, height, request,"
                    " created_at, bytes, client) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec.id, rec.key, rec.fingerprint, rec.synthesizer, rec.group_key, rec.width, rec.height,
                     request, rec.created_at, rec.bytes, rec.client),
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateKeyError(rec.key) from exc
            rec.seq = int(cur.lastrowid or 0)
            rec.state = "queued"
            self._files_bytes += rec.bytes
        return rec

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def get_by_key(self, key: str) -> JobRecord | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone())

    def tombstone(self, job_id: str) -> Tombstone | None:
        """The tombstone of a deleted job (``None`` for a job never known, or deleted past ``tombstone_s``)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM tombstones WHERE id = ?", (job_id,)).fetchone()
        return Tombstone(**dict(row)) if row is not None else None

    def tombstone_by_key(self, key: str) -> Tombstone | None:
        """The newest tombstone of a key (every job a key ever named had the same content)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM tombstones WHERE key = ? ORDER BY deleted_at DESC LIMIT 1",
                                   (key,)).fetchone()
        return Tombstone(**dict(row)) if row is not None else None

    def list(self, *, states: Iterable[str] = (), ids: Iterable[str] = (), key: str | None = None,
             after: int = 0, limit: int = 100) -> list[JobRecord]:
        """Jobs in submission order, filtered; ``after`` is the ``seq`` cursor of the previous page."""
        where, args = ["seq > ?"], [after]
        states, ids = list(states), list(ids)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if key is not None:
            where.append("key = ?")
            args.append(key)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [r for r in (self._row(row) for row in rows) if r is not None]

    def count_by_state(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
                out[row["state"]] = row["n"]
        return out

    def queued_count(self, client: str | None = None) -> int:
        """Jobs waiting in the queue (of ``client`` only, when given)."""
        with self._lock:
            if client is None:
                return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND client = ?",
                                        (client,)).fetchone()[0])

    def queued_clients(self) -> int:
        """How many clients have jobs in the queue."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(DISTINCT client) FROM jobs WHERE state = 'queued'").fetchone()[0])

    def claim(self, worker: str, limit: int, group_key: str | None = None,
              usage: Callable[[str], float] | None = None) -> list[JobRecord]:
        """Move up to ``limit`` queued jobs of one group to ``running`` for ``worker``.

        Without ``usage``: the oldest queued job's group, oldest first (first come, first served).
        With it (:mod:`.fairness`): the first job is the oldest of the client whose usage (``usage``
        of its past worker-seconds, plus the time its running jobs have run so far) is least, and a
        batch fills with that group's jobs in the same order of clients.  ``group_key`` given: jobs
        of that group only.  A batch only holds jobs that one synthesizer can run with one set of options.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rank: dict[str, float] = {}
                if usage is not None:
                    running = dict(self._db.execute(
                        "SELECT client, SUM(MAX(0, ? - COALESCE(started_at, ?))) FROM jobs WHERE state = 'running' "
                        "GROUP BY client", (now, now)).fetchall())
                    clients = [r[0] for r in self._db.execute(
                        "SELECT DISTINCT client FROM jobs WHERE state = 'queued'").fetchall()]
                    rank = {c: usage(c) + float(running.get(c) or 0.0) for c in clients}
                if group_key is None:
                    if rank:
                        heads = self._db.execute(
                            "SELECT client, MIN(seq) AS seq FROM jobs WHERE state = 'queued' GROUP BY client").fetchall()
                        head = min(heads, key=lambda h: (rank.get(h["client"], 0.0), h["seq"]))
                        first = self._db.execute("SELECT group_key FROM jobs WHERE seq = ?", (head["seq"],)).fetchone()
                    else:
                        first = self._db.execute(
                            "SELECT group_key FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
                    if first is None:
                        self._db.execute("COMMIT")
                        return []
                    group_key = first["group_key"]
                if rank:
                    rows = self._db.execute(
                        "SELECT id, client, seq FROM jobs WHERE state = 'queued' AND group_key = ?",
                        (group_key,)).fetchall()
                    rows = sorted(rows, key=lambda r: (rank.get(r["client"], 0.0), r["seq"]))[:limit]
                else:
                    rows = self._db.execute(
                        "SELECT id FROM jobs WHERE state = 'queued' AND group_key = ? ORDER BY seq LIMIT ?",
                        (group_key, limit)).fetchall()
                ids = [r["id"] for r in rows]
                if ids:
                    self._db.execute(
                        f"UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1, worker = ?"
                        f" WHERE id IN ({','.join('?' * len(ids))})", (now, worker, *ids))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return [r for r in (self.get(i) for i in ids) if r is not None]

    def finish(self, job_id: str, state: str, *, error: str | None = None) -> JobRecord | None:
        """Record a running job's end; a cancel asked for while it ran turns it into ``cancelled``.

        The job's ``bytes`` is re-read from its folder: the result and mask written by the worker.
        """
        now = time.time()
        with self._lock:
            row = self.get(job_id)
            if row is None or row.state != "running":
                return row
            if row.cancel_requested:
                state, error = "cancelled", "cancelled while running"
            seconds = now - row.started_at if row.started_at else None
            size = folder_bytes(self.job_dir(job_id))
            self._db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, seconds = ?, error = ?, bytes = ? WHERE id = ?",
                (state, now, seconds, error, size, job_id))
            self._files_bytes += size - row.bytes
            return self.get(job_id)

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job at once; a running one is marked and cancelled when its call returns."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled' "
                "WHERE id = ? AND state = 'queued'", (now, job_id))
            self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
            return self.get(job_id)

    def delete(self, job_ids: Iterable[str], reason: str, *, now: float | None = None) -> DeleteOutcome:
        """Delete jobs' rows (one transaction), leaving a tombstone of each; their folders are the caller's.

        A queued or finished job's row goes at once; a running one is marked to be cancelled and
        deleted when its call returns (:meth:`finish` then :meth:`delete` again).  The caller removes
        the folders of ``outcome.deleted`` *after* this returns, so a crash in between leaves a
        folder without a row (swept at start-up), never a row without its files.
        """
        if reason not in DELETE_REASONS:
            raise ValueError(f"reason must be one of {DELETE_REASONS}")
        now = time.time() if now is None else now
        out = DeleteOutcome()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = 0
                for job_id in dict.fromkeys(job_ids):
                    rec = self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
                    if rec is None:
                        tomb = self._db.execute("SELECT * FROM tombstones WHERE id = ?", (job_id,)).fetchone()
                        if tomb is not None:
                            out.already.append(Tombstone(**dict(tomb)))
                        else:
                            out.missing.append(job_id)
                        continue
                    if rec.state == "running":
                        self._db.execute("UPDATE jobs SET cancel_requested = 1, delete_requested = 1 WHERE id = ?",
                                         (job_id,))
                        rec.cancel_requested = rec.delete_requested = True
                        out.deleting.append(rec)
                        continue
                    final = "cancelled" if rec.state == "queued" else rec.state  # a queued job never runs now
                    self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    self._db.execute(
                        "INSERT OR REPLACE INTO tombstones (id, key, fingerprint, state, deleted_at, reason, attempts)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (job_id, rec.key, rec.fingerprint, final, now, reason,
                                                          rec.attempts))
                    for name in (f"deleted_{final}", f"deleted_by_{reason}"):
                        self._db.execute("INSERT INTO counters (name, value) VALUES (?, 1) "
                                         "ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))
                    freed += rec.bytes
                    rec.state = final
                    out.deleted.append(rec)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._files_bytes -= freed
        return out

    def due_for_deletion(self, older_than: float | None, limit: int) -> list[tuple[str, str]]:
        """Finished jobs to delete now, oldest first, at most ``limit``: ``(id, reason)`` pairs.

        Those a client asked to delete while they ran (``client``), then those that finished before
        ``older_than`` (``retention``; ``None``: no retention).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE delete_requested = 1 AND state IN ('done', 'failed', 'cancelled') "
                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
            out = [(r[0], "client") for r in rows]
            if older_than is not None and len(out) < limit:
                rows = self._db.execute(
                    "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < ? "
                    "AND delete_requested = 0 ORDER BY finished_at LIMIT ?", (older_than, limit - len(out))).fetchall()
                out.extend((r[0], "retention") for r in rows)
        return out

    def prune_tombstones(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` of the oldest tombstones written before ``older_than``; returns how many."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM tombstones WHERE id IN (SELECT id FROM tombstones WHERE deleted_at < ? "
                "ORDER BY deleted_at LIMIT ?)", (older_than, limit)).rowcount

    def recover(self, max_attempts: int, cause: str | None = None) -> tuple[int, int]:
        """After a crash: re-queue running jobs, or fail those the server died on ``max_attempts`` times
        (their error says ``cause``, how the last server ended, when its supervisor recorded it).

        Returns ``(requeued, failed)``.
        """
        now = time.time()
        error = f"the server stopped while running this job {max_attempts} times"
        if cause:
            error += f" (the last time: {cause})"
        with self._lock:
            failed = self._db.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                "WHERE state = 'running' AND attempts >= ?",
                (now, error, max_attempts)).rowcount
            cancelled = self._db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled while running' "
                "WHERE state = 'running' AND cancel_requested = 1", (now,)).rowcount
            requeued = self._db.execute(
                "UPDATE jobs SET state = 'queued', started_at = NULL, worker = NULL WHERE state = 'running'").rowcount
        return requeued, failed + cancelled

    def requeue(self, job_ids: Iterable[str]) -> None:
        """Put running jobs back in the queue without counting the attempt (graceful shutdown)."""
        ids = list(job_ids)
        if not ids:
            return
        with self._lock:
            self._db.execute(
                f"UPDATE jobs SET state = 'queued', started_at = NULL, worker = NULL, attempts = MAX(0, attempts - 1)"
                f" WHERE state = 'running' AND id IN ({','.join('?' * len(ids))})", ids)

    def requeue_lost(self, job_ids: Iterable[str], max_attempts: int, why: str) -> list[JobRecord]:
        """Running jobs whose device died under them: back to the queue, as :meth:`recover` does after a
        crash (the attempt counts).  Returns the jobs that ended instead: failed after ``max_attempts``
        attempts, or cancelled because a client asked while they ran."""
        ids = list(job_ids)
        if not ids:
            return []
        now = time.time()
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                failed = [r[0] for r in self._db.execute(
                    f"SELECT id FROM jobs WHERE state = 'running' AND id IN ({marks}) AND cancel_requested = 0 "
                    f"AND attempts >= ?", (*ids, max_attempts))]
                self._db.execute(
                    f"UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE state = 'running' "
                    f"AND id IN ({marks}) AND cancel_requested = 0 AND attempts >= ?",
                    (now, f"{why}, {max_attempts} times while running this job", *ids, max_attempts))
                cancelled = [r[0] for r in self._db.execute(
                    f"SELECT id FROM jobs WHERE state = 'running' AND id IN ({marks}) AND cancel_requested = 1", ids)]
                self._db.execute(
                    f"UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled while running' "
                    f"WHERE state = 'running' AND id IN ({marks}) AND cancel_requested = 1", (now, *ids))
                self._db.execute(
                    f"UPDATE jobs SET state = 'queued', started_at = NULL, worker = NULL "
                    f"WHERE state = 'running' AND id IN ({marks})", ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return [r for r in (self.get(i) for i in failed + cancelled) if r is not None]

    def recent_seconds(self, limit: int) -> list[float]:
        """Run times of the last ``limit`` done jobs (for the mean/p95 metrics)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seconds FROM jobs WHERE state = 'done' AND seconds IS NOT NULL "
                "ORDER BY finished_at DESC LIMIT ?", (limit,)).fetchall()
        return [float(r[0]) for r in rows]
