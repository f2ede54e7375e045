"""The job store's disk: atomic file writes, the store's lock, a full disk told apart, a folder's size.

Layout under ``data_dir``: ``server.lock``, ``jobs.sqlite3`` (:mod:`.store`),
``jobs/<id>/{input,result,mask}.png`` and, after a crash, ``last_exit.txt``.  Its own module because these rules hold for every file the
server writes, whatever table row it belongs to: a file is absent or complete, never half written
(a result too, written by a worker outside any transaction, :mod:`.runner` too); one server per
store, by ``flock``; and a full disk is recognised by its errno (or SQLite's words for it), so
that callers degrade instead of dying (:mod:`.workers`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

from syngrpo.errors import SyngrpoError


class StoreError(SyngrpoError):
    """The job store cannot be opened: unwritable directory, or another server holds it."""


#: how the previous server process on this store died (a native crash in a worker takes the whole process with
#: it, where no Python handler can fail its job): written by the supervisor that restarts it (:mod:`.spawn`),
#: taken by the next server, which puts it in the errors of the jobs the dead one was running
LAST_EXIT_FILE = "last_exit.txt"


def exit_cause(returncode: int | None, log_tail: str) -> str:
    """How a server process ended, in words: ``exited with status -6 (SIGABRT); server.log ends with 'terminate
    called without an active exception'`` (a negative status is the signal that ended it)."""
    import signal

    how = f"exited with status {returncode}"
    if returncode is not None and returncode < 0:
        try:
            how += f" ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    return how + (f"; server.log ends with {lines[-1][:300]!r}" if lines else "")


def take_last_exit(data_dir: Path) -> str | None:
    """The recorded death of the previous server on this store, removed once read (``None``: none recorded)."""
    path = Path(data_dir) / LAST_EXIT_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return text or None


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


#: a job's result and keep mask as PNG files take at most about this many bytes per pixel: RGB (3) and
#: the mask (1) stored with no compression at all; PNG adds a filter byte per row (``2 * height``) and
#: a few chunks (``RESULT_OVERHEAD_BYTES``).  The disk budget counts this for each queued job, not the
#: size of its input: a 16-megapixel input of one colour is a few kB of PNG, its result up to 64 MB.
RESULT_BYTES_PER_PIXEL = 4
RESULT_OVERHEAD_BYTES = 4096


def result_bytes_bound(width: int, height: int) -> int:
    """The most a job's result and mask files can take on disk (see :data:`RESULT_BYTES_PER_PIXEL`)."""
    return RESULT_BYTES_PER_PIXEL * width * height + 2 * height + RESULT_OVERHEAD_BYTES


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


def remove_tmp_files(jobs_dir: Path) -> int:
    """Remove the temporary files of writes a crash cut short (``jobs/*/.*.tmp``); returns how many went."""
    removed = 0
    for tmp in jobs_dir.glob("*/.*.tmp"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def folder_bytes(folder: Path) -> int:
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
