"""Jobs in SQLite, images on disk: what a restart (even after SIGKILL) must not lose.

A job is acknowledged only after its input image is on disk and its row is committed, and it
is ``done`` only after its result files are on disk; so after a crash every acknowledged job is
either still queued, re-queued (it was running), or finished with its files in place.

Layout under ``data_dir``: ``jobs.sqlite3`` and ``jobs/<id>/{input,result,mask}.png``.
The database runs in WAL mode with ``synchronous=NORMAL``: durable across a process crash;
an operating-system crash or power loss may lose the last commits.

Deleting a job is two steps in this order: one transaction removes its row and writes its
tombstone, then its folder is removed.  A crash in between leaves a folder without a row, which
the start-up :meth:`JobStore.sweep` removes; never a row whose files are gone.  Each row records
the bytes of its files (``bytes``, re-read from the files at start-up), so the store's size is
known without walking the disk on every submission.
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
    worker TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    delete_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tombstones_key ON tombstones(key);
CREATE INDEX IF NOT EXISTS tombstones_deleted ON tombstones(deleted_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

#: columns added after the first release: a store written by an older server gets them on opening
_ADDED_COLUMNS = {
    "bytes": "INTEGER NOT NULL DEFAULT 0",
    "delete_requested": "INTEGER NOT NULL DEFAULT 0",
}

#: bytes the WAL file is truncated to after a checkpoint
WAL_SIZE_LIMIT = 1024 * 1024

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
#: why a job was deleted (the ``reason`` of its tombstone and the label of ``syngrpo_jobs_deleted_total``)
DELETE_REASONS = ("client", "retention")


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
    #: bytes of the job's files on disk (input, and result and mask once written)
    bytes: int = 0
    #: a client deleted it while it ran: it is cancelled, then deleted, when its call returns
    delete_requested: bool = False
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
            "delete_requested": self.delete_requested,
            "links": links,
        }


@dataclass
class Tombstone:
    """What is left of a deleted job: enough to answer its id (410) and to keep its key's content."""

    id: str
    key: str
    fingerprint: str
    state: str  # the state it was deleted in
    deleted_at: float
    reason: str
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The answer of ``DELETE /v1/jobs/{id}`` (every time it is asked: deletion is idempotent)."""
        return {"id": self.id, "key": self.key, "state": "deleted", "final_state": self.state,
                "deleted_at": self.deleted_at, "reason": self.reason}


@dataclass
class DeleteOutcome:
    """What :meth:`JobStore.delete` did with each job it was given."""

    deleted: list[JobRecord] = field(default_factory=list)  # rows gone now (their folders are the caller's)
    deleting: list[JobRecord] = field(default_factory=list)  # running: cancelled and deleted when the call returns
    already: list[Tombstone] = field(default_factory=list)  # deleted before
    missing: list[str] = field(default_factory=list)  # never known (or their tombstone expired)


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


def atomic_write(path: Path, data: bytes, *, make_parents: bool = True) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, never half written.

    A failed write (a full disk) removes its temporary file: nothing is left behind.  With
    ``make_parents=False`` a missing folder is :class:`FileNotFoundError`: a job's result is never
    written into a folder that its deletion removed (it would be left there for good).
    """
    if make_parents:
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
            # the WAL file keeps its largest size (~4 MiB) after each checkpoint unless told: it counts in the store
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db.executescript(_SCHEMA)
            have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
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
        tmp_files = 0
        for tmp in self.jobs_dir.glob("*/.*.tmp"):
            try:
                tmp.unlink()
                tmp_files += 1
            except OSError:
                pass
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
                sizes[d.name] = _folder_bytes(d)
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

    def unfinished_input_bytes(self) -> int:
        """Input bytes of queued and running jobs: about what their results will add (a result is the input's size)."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM jobs WHERE state IN ('queued', 'running')").fetchone()[0])

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
                    " created_at, bytes) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                    (rec.id, rec.key, rec.fingerprint, rec.synthesizer, rec.group_key, rec.width, rec.height,
                     request, rec.created_at, rec.bytes),
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
            size = _folder_bytes(self.job_dir(job_id))
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


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files in a job's folder (temporary files of a write in progress not counted)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.endswith(".tmp"):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total
