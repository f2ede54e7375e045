"""A worker's device in a process of its own: both ends of the pipe between the server and that process.

Why a process per worker (``worker_isolation: process``, what ``syngrpo serve`` runs): GPU workers
in threads of one interpreter share its lock (PNG encoding, the pipeline's numpy work, a plugin's
Python code all wait for each other) and its global state: BEN2 reseeds every global random
generator and flips cuDNN switches on each call, which then leak into the other devices' jobs.  In
a process of its own each device has its own interpreter, its own generators and its own CUDA
context, and a call that ignores its deadline can be ended for good: the process is killed and a
fresh one loads the models again, where a thread could only be abandoned.

The server's side (:class:`ProcessRunner`) speaks to the process over a ``multiprocessing`` pipe, one
call at a time: ``load`` (build the plugins), ``run`` (a batch, under the job deadline) and ``stop``.
Waiting never blocks the event loop (the pipe's descriptor is watched with ``add_reader``).  The
process dies with the server: ``PR_SET_PDEATHSIG`` on Linux and a check that its parent is still the
one that started it; it ignores SIGINT, so a Ctrl-C in a terminal stops the server, which then
stops its workers, instead of killing a job half way.  What the worker makes of each outcome
(a process that died mid-call: :class:`~syngrpo.synthesis.server.device.DeviceLost`) is
:mod:`.device_worker`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from syngrpo.synthesis.pipeline import job_deadline
from syngrpo.synthesis.server.calls import CallTimeout
from syngrpo.synthesis.server.device import DeviceError, DeviceJob, DeviceLost, DeviceModels, DeviceOutcome, DeviceSpec

log = logging.getLogger("syngrpo.synthesis.server")

KILL_GRACE_S = 5.0
"""After a call's time-out, how long its process may take to return by itself before it is killed.

The built-in synthesizers check the deadline between units of work and return within one of them;
a process that has not returned by then is killed and started afresh (its models load again).
"""

STOP_WAIT_S = 2.0
"""How long a stopping server waits for an idle worker process to exit before killing it."""


def worker_main(conn: Any, spec: DeviceSpec, name: str, parent_pid: int) -> None:
    """The worker process: build the plugins when asked, run batches, answer each call in order."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority(spec.nice)
    _watch_parent(parent_pid)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    models = DeviceModels(spec)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        op = msg[0]
        if op == "stop":
            return
        try:
            if op == "load":
                models.load()
                reply: tuple[str, Any] = ("ok", os.getpid())
            elif op == "run":
                _, jobs, timeout = msg
                with job_deadline(timeout):
                    reply = ("ok", models.run(jobs))
            else:
                reply = ("error", f"unknown call {op!r}")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the server as text
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _lower_priority(nice: int) -> None:
    """``worker_nice``: yield the CPU to the server's event loop when both want it.

    Synthesis is throughput work; the event loop answers every client, and its latency is what a
    client waits.  On shared cores a busy worker process at the server's own priority took half the
    loop's CPU, which doubled every request's time under a heavy flood (docs/data-server.md, "Clients,
    shares and fairness").  A lower priority costs the worker nothing when the loop is idle.
    """
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(nice)


def _die_with_parent() -> None:
    """``PR_SET_PDEATHSIG``: Linux kills this process when the server's thread that started it exits (the
    server's event-loop thread, which lives as long as the server).  A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _watch_parent(parent_pid: int) -> None:
    """Exit when the server is gone, where ``PR_SET_PDEATHSIG`` does not exist."""

    def run() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=run, name="syngrpo-server-watch", daemon=True).start()


class ProcessRunner:
    """The server's end of one worker process (spawned, not forked: a fresh interpreter, no inherited locks)."""

    kind = "process"

    def __init__(self, spec: DeviceSpec, name: str, *, kill_grace_s: float = KILL_GRACE_S) -> None:
        self.spec = spec
        self.name = name
        self.kill_grace_s = kill_grace_s
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._busy = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _spawn(self) -> None:
        if self._proc is not None:
            self.restarts += 1
            self.kill()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self.spec, self.name, os.getpid()),
                                 name=f"syngrpo-{self.name}", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    async def load(self, timeout: float) -> None:
        """Start a fresh process and build its plugins; raises :class:`DeviceError` if they cannot be made."""
        self._spawn()
        await self._call(("load",), timeout)
        log.info("%s: worker process %d ready", self.name, self.pid)

    async def run(self, jobs: list[DeviceJob], timeout: float) -> list[DeviceOutcome]:
        """One batch under ``timeout``; past it :class:`CallTimeout` (whose ``call`` ends once the process
        returned or was killed), a dead process :class:`DeviceLost`."""
        return await self._call(("run", jobs, timeout), timeout)

    async def _call(self, msg: tuple[Any, ...], timeout: float) -> Any:
        conn = self._conn
        self._busy = True
        try:
            await asyncio.to_thread(conn.send, msg)
        except (BrokenPipeError, EOFError, OSError) as exc:
            self._busy = False
            raise DeviceLost(f"the worker process {self.pid} is gone ({type(exc).__name__})") from None
        try:
            ready = await _readable(conn, timeout)
        except BaseException:
            self._busy = False  # cancelled (the server stops): the process is killed by shutdown()
            raise
        if not ready:
            settle = asyncio.ensure_future(self._settle(conn))
            raise CallTimeout(f"timed out after {timeout:g} s", settle)
        return self._answer(await self._recv(conn))

    async def _recv(self, conn: Any) -> Any:
        try:
            return await asyncio.to_thread(conn.recv)
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            if code is None and self._proc is not None:
                await asyncio.to_thread(self._proc.join, 1.0)
                code = self._proc.exitcode
            raise DeviceLost(f"the worker process {self.pid} died ({_exit_words(code)}; its last words are in "
                             "the server's log)") from None
        finally:
            self._busy = False

    def _answer(self, reply: Any) -> Any:
        status, value = reply
        if status == "error":
            raise DeviceError(value)
        return value

    async def _settle(self, conn: Any) -> None:
        """After a time-out: take the late answer if it comes within the grace, else kill the process."""
        with contextlib.suppress(DeviceLost):
            if await _readable(conn, self.kill_grace_s):
                await self._recv(conn)  # the late answer of failed jobs: dropped
                return
        log.warning("%s: the worker process %s ran %g s past its time-out; killing it", self.name, self.pid,
                    self.kill_grace_s)
        self._busy = False
        self.kill()

    def kill(self) -> None:
        proc, conn = self._proc, self._conn
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()
        self._conn = None

    def shutdown(self) -> None:
        """Stop the process: an idle one is asked to exit, a busy one is killed (its jobs are re-queued)."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if not self._busy and conn is not None and proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
            proc.join(STOP_WAIT_S)
        self.kill()
        self._proc = None

    def health(self) -> dict[str, Any]:
        return {"isolation": self.kind, "pid": self.pid, "restarts": self.restarts}


def _exit_words(code: int | None) -> str:
    """``exit code -6 (SIGABRT)``: a negative code is the signal that ended the process, named as a user searches it."""
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"exit code {code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"exit code {code}"


async def _readable(conn: Any, timeout: float) -> bool:
    """Whether ``conn`` has something to read (an answer, or EOF) within ``timeout`` seconds."""
    if conn.poll():
        return True
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(True)

    loop.add_reader(fd, on_ready)
    try:
        await asyncio.wait((ready,), timeout=timeout)
    finally:
        loop.remove_reader(fd)
    return ready.done()
