"""Jobs in SQLite, images on disk: what a restart (even after SIGKILL) must not lose.

A job is acknowledged only after its input image is on disk and its row is committed, and it
is ``done`` only after its result files are on disk; so after a crash every acknowledged job is
either still queued, re-queued (it was running), or finished with its files in place.

Layout under ``data_dir``: ``jobs.sqlite3`` and ``jobs/<id>/{input,result,mask}.png``.
The database runs in WAL mode with ``synchronous=NORMAL``: durable across a process crash;
an operating-system crash or power loss may lose the last commits.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.errors import SyngrpoError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    synthesizer TEXT NOT NULL,
    group_key TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
"""

STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass
class JobRecord:
    """One row of the jobs table, with the request fields decoded."""

    id: str
    key: str
    fingerprint: str
    state: str
    synthesizer: str
    group_key: str
    width: int
    height: int
    boxes: list[list[float]]
    labels: list[str]
    description: str
    options: dict[str, Any]
    seed: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    error: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The public view of a job (what ``GET /v1/jobs/{id}`` answers)."""
        base = f"/v1/jobs/{self.id}"
        links = {"self": base, "input": f"{base}/input.png", "cancel": f"{base}/cancel"}
        if self.state == "done":
            links.update({"result": f"{base}/result", "image": f"{base}/result.png", "mask": f"{base}/mask.png"})
        return {
            "id": self.id,
            "key": self.key,
            "state": self.state,
            "synthesizer": self.synthesizer,
            "width": self.width,
            "height": self.height,
            "boxes": self.boxes,
            "labels": self.labels,
            "description": self.description,
            "options": self.options,
            "seed": self.seed,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "error": self.error,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "links": links,
        }


class DuplicateKeyError(Exception):
    """A job with this idempotency key exists already."""


class StoreError(SyngrpoError):
    """The job store cannot be opened: unwritable directory, or another server holds it."""


#: errno values that mean "the disk cannot take more now" (full, over quota, read-only)
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the store's disk is full (a file write, or SQLite unable to commit)."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return True
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        return "disk is full" in text or "disk i/o error" in text or "readonly" in text
    return False


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, never half written.

    A failed write (a full disk) removes its temporary file: nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


LOCK_FILE = "server.lock"


def lock_store(data_dir: Path) -> int:
    """Take the exclusive lock of a store directory (``flock`` on ``server.lock``); returns its descriptor.

    Two servers on one store would both recover its ``running`` jobs and run them twice; the
    second is refused here.  The kernel drops the lock when the holder exits, even by SIGKILL.
    """
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StoreError(f"the job store {data_dir} is in use by another data server (pid {holder}); "
                             "stop it first, or give this server another data_dir") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


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
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._unlock()
            raise StoreError(f"cannot open the job database {self.db_path}: {exc}; "
                             "give data_dir a writable directory") from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._unlock()

    def remove_job_files(self, job_id: str) -> None:
        """Delete a job's folder (a submission that could not be committed leaves nothing behind)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def sweep(self) -> tuple[int, int]:
        """At start-up: remove ``.tmp`` files and job folders without a row (a crash or a full disk
        between writing a job's input and committing it); returns ``(tmp files, orphan folders)``."""
        tmp_files = 0
        for tmp in self.jobs_dir.glob("*/.*.tmp"):
            try:
                tmp.unlink()
                tmp_files += 1
            except OSError:
                pass
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
        orphans = 0
        for d in self.jobs_dir.iterdir():
            if d.is_dir() and d.name not in known:
                shutil.rmtree(d, ignore_errors=True)
                orphans += 1
        return tmp_files, orphans

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
        )

    def insert(self, rec: JobRecord) -> JobRecord:
        """Commit a new queued job; raises :class:`DuplicateKeyError` if its key exists."""
        request = json.dumps({"boxes": rec.boxes, "labels": rec.labels, "description": rec.description,
                              "options": rec.options, "seed": rec.seed})
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO jobs (id, key, fingerprint, state, synthesizer, group_key, width, height, request,"
                    " created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (rec.id, rec.key, rec.fingerprint, rec.synthesizer, rec.group_key, rec.width, rec.height,
                     request, rec.created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateKeyError(rec.key) from exc
            rec.seq = int(cur.lastrowid or 0)
            rec.state = "queued"
        return rec

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def get_by_key(self, key: str) -> JobRecord | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone())

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

    def queued_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0])

    def claim(self, worker: str, limit: int, group_key: str | None = None) -> list[JobRecord]:
        """Move up to ``limit`` of the oldest queued jobs of one group to ``running`` for ``worker``.

        The group is the oldest queued job's unless ``group_key`` is given: a batch only holds jobs
        that the same synthesizer can run with the same options.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if group_key is None:
                    first = self._db.execute(
                        "SELECT group_key FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
                    if first is None:
                        self._db.execute("COMMIT")
                        return []
                    group_key = first["group_key"]
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
        """Record a running job's end; a cancel asked for while it ran turns it into ``cancelled``."""
        now = time.time()
        with self._lock:
            row = self.get(job_id)
            if row is None or row.state != "running":
                return row
            if row.cancel_requested:
                state, error = "cancelled", "cancelled while running"
            seconds = now - row.started_at if row.started_at else None
            self._db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, seconds = ?, error = ? WHERE id = ?",
                (state, now, seconds, error, job_id))
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

    def recover(self, max_attempts: int) -> tuple[int, int]:
        """After a crash: re-queue running jobs, or fail those the server died on ``max_attempts`` times.

        Returns ``(requeued, failed)``.
        """
        now = time.time()
        with self._lock:
            failed = self._db.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                "WHERE state = 'running' AND attempts >= ?",
                (now, f"the server stopped while running this job {max_attempts} times", max_attempts)).rowcount
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

    def recent_seconds(self, limit: int) -> list[float]:
        """Run times of the last ``limit`` done jobs (for the mean/p95 metrics)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seconds FROM jobs WHERE state = 'done' AND seconds IS NOT NULL "
                "ORDER BY finished_at DESC LIMIT ?", (limit,)).fetchall()
        return [float(r[0]) for r in rows]
