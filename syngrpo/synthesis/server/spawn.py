"""Starting a data server as a child process (the trainer's quickstart, tests, notebooks).

    handle = start_server_subprocess(None, data_dir=run_dir / "server")
    transport = registry.create("transports", "aiohttp", urls=[handle.url])
    ...
    handle.stop()

The child is ``python -m syngrpo.synthesis.server``; with ``port=0`` it binds a free port and reports it in
a ready file, and this function returns once ``GET /healthz`` answers 200.  By default the child
is bound to this process's life (``--parent-pid``: it stops when this process dies, even by
SIGKILL), so a killed trainer never leaves an orphan server holding its store.  It runs in a session of
its own, so a terminal's Ctrl-C reaches the trainer alone, which stops it when it is done with it.

:class:`SupervisedServer` (what a trainer with ``synthesis.spawn_server`` uses) restarts the child
with back-off when it dies, on the same port and store, so synthesis resumes by itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from syngrpo.errors import SyngrpoError
from syngrpo.synthesis.server.config import TOKEN_ENV
from syngrpo.synthesis.server.files import LAST_EXIT_FILE, exit_cause

log = logging.getLogger("syngrpo.synthesis.server")


class ServerStartError(SyngrpoError):
    """The data server process exited or did not answer its health check in time."""


@dataclass
class ServerHandle:
    """A running data-server child process."""

    process: subprocess.Popen
    url: str
    host: str
    port: int
    data_dir: Path | None
    log_path: Path
    token: str | None = None
    _tmp: list[tempfile.TemporaryDirectory] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful: running jobs go back to the queue), then SIGKILL after ``timeout``."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for t in self._tmp:
            t.cleanup()
        self._tmp.clear()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would (for restart tests)."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get(url: str, timeout: float, token: str | None = None) -> tuple[int, dict]:
    """GET ``url`` as JSON (with the bearer token when given: ``/healthz`` tells only up or down without it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310 - our own URL
                                    timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def start_server_subprocess(
    config_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: str | Path | None = None,
    token: str | None = None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    startup_timeout_s: float = 60.0,
    wait_ready: bool = False,
    python: str = sys.executable,
    bind_to_parent: bool = True,
) -> ServerHandle:
    """Start ``syngrpo serve`` in a child process and wait until it answers ``/healthz``.

    ``port=0`` picks a free port (read back from the child's ready file).  ``data_dir`` overrides
    the config's (None keeps it).  ``token`` is handed over in ``$SYNGRPO_SERVER_TOKEN``, never on
    the command line.  ``wait_ready`` also waits until every worker has loaded its models.
    ``bind_to_parent`` makes the child stop when this process dies (start it from a thread that
    lives as long as the child: Linux sends the parent-death signal when the *thread* that started
    it exits).  The child's output goes to ``log_path`` (default: a file next to the ready file, or
    ``data_dir/server.log``).  Raises :class:`ServerStartError` with the log's tail on failure.
    """
    tmp = tempfile.TemporaryDirectory(prefix="syngrpo-server-")
    ready = Path(tmp.name) / "ready.json"
    if log_path is None:
        log_path = (Path(data_dir) / "server.log") if data_dir is not None else Path(tmp.name) / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "syngrpo.synthesis.server", "--host", host, "--port", str(port), "--ready-file", str(ready)]
    if config_path is not None:
        cmd += ["-c", str(config_path)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    for item in overrides:
        cmd += ["--set", item]
    if bind_to_parent:
        cmd += ["--parent-pid", str(os.getpid())]
    child_env = dict(os.environ if env is None else env)
    if token is not None:
        child_env[TOKEN_ENV] = token
    with open(log_path, "ab") as log_fh:
        # a session of its own: a terminal's Ctrl-C goes to the whole foreground process group, and the trainer,
        # which stops at the end of its step and checkpoints, still needs the server until it stops it itself
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=child_env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    handle = ServerHandle(proc, url="", host=host, port=port, data_dir=Path(data_dir) if data_dir else None,
                          log_path=log_path, token=token, _tmp=[tmp])
    deadline = time.monotonic() + startup_timeout_s

    def fail(why: str) -> ServerStartError:
        handle.kill()
        tail = handle.log_tail()
        for t in handle._tmp:
            t.cleanup()
        return ServerStartError(f"the data server did not start: {why}\n--- server log ({log_path}) ---\n{tail}")

    while not ready.is_file():
        if proc.poll() is not None:
            raise fail(f"it exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise fail(f"no ready file after {startup_timeout_s:g} s")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    handle.url, handle.port = info["url"], int(info["port"])
    while True:
        if proc.poll() is not None:
            raise fail(f"it exited with status {proc.returncode}")
        try:
            status, body = _get(handle.url + "/healthz", timeout=2.0, token=child_env.get(TOKEN_ENV))
        except (OSError, ValueError):
            status, body = 0, {}
        if status == 200 and (not wait_ready or body.get("ready")):
            return handle
        if status == 200 and "ready" not in body:  # the anonymous answer of a server whose token we lack
            raise fail("/healthz tells only up or down without the server's token, so readiness cannot be "
                       "seen; pass token= (or set $SYNGRPO_SERVER_TOKEN) for a server whose config has one")
        if status == 503:
            raise fail(f"/healthz reports the server broken: {body}")
        if time.monotonic() > deadline:
            raise fail(f"/healthz did not answer 200{' ready' if wait_ready else ''} within {startup_timeout_s:g} s")
        time.sleep(0.05)


class SupervisedServer:
    """A spawned data server that is restarted, with back-off, whenever it dies.

    ``start(port)`` starts one server process (a :func:`start_server_subprocess` call with the
    same store); the first start picks a free port, every restart reuses it, so clients keep their
    URL.  A watch thread checks the child every ``check_interval_s``; after a death it waits
    ``backoff_s``, doubling after each restart up to ``backoff_max_s`` (reset once a server has run
    ``stable_s``).  What happened is queued for the trainer's log (:meth:`drain_events`).
    """

    def __init__(self, start: Callable[[int], ServerHandle], *, check_interval_s: float = 0.5,
                 backoff_s: float = 1.0, backoff_max_s: float = 30.0, stable_s: float = 60.0) -> None:
        self._start = start
        self.check_interval_s = check_interval_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        self.handle = start(0)
        self.port = self.handle.port
        self.url = self.handle.url
        self.restarts = 0
        self._started_at = time.monotonic()
        self._events: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # The watch thread starts the restarted servers and lives as long as they must (see bind_to_parent).
        self._thread = threading.Thread(target=self._watch, name="syngrpo-server-supervisor", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def log_path(self) -> Path:
        return self.handle.log_path

    def alive(self) -> bool:
        return self.handle.alive()

    def _event(self, text: str) -> None:
        log.warning("%s", text)
        with self._lock:
            self._events.append(text)

    def drain_events(self) -> list[str]:
        """What happened to the server since the last call (deaths, restarts, failed restarts)."""
        with self._lock:
            out, self._events = self._events, []
        return out

    def _watch(self) -> None:
        delay = self.backoff_s
        while not self._stopping.wait(self.check_interval_s):
            if self.handle.alive():
                if time.monotonic() - self._started_at > self.stable_s:
                    delay = self.backoff_s
                continue
            dead = self.handle
            dead.stop(timeout=1)  # reap it and remove its ready-file folder
            cause = exit_cause(dead.process.returncode, dead.log_tail())
            if dead.data_dir is not None:  # the next server fails or re-queues its jobs with this cause
                try:
                    (dead.data_dir / LAST_EXIT_FILE).write_text(cause, encoding="utf-8")
                except OSError as exc:
                    log.warning("could not record the data server's exit in %s: %s", dead.data_dir, exc)
            self._event(f"data server (pid {dead.pid}) {cause}; restarting it in {delay:g} s")
            while not self._stopping.wait(delay):
                try:
                    new = self._start(self.port)
                except Exception as exc:  # noqa: BLE001 - a failed restart is retried, never fatal here
                    delay = min(self.backoff_max_s, delay * 2)
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self._event(f"restarting the data server failed ({first}); next try in {delay:g} s")
                    continue
                if self._stopping.is_set():
                    new.stop()
                    return
                self.handle = new
                self.restarts += 1
                self._started_at = time.monotonic()
                self._event(f"data server restarted at {new.url} (pid {new.pid}, restart {self.restarts})")
                delay = min(self.backoff_max_s, delay * 2)
                break

    def hold(self) -> None:
        """Restart no more (the trainer is shutting down): a server that exits from now on stays down."""
        self._stopping.set()

    def kill(self) -> None:
        """SIGKILL the current server process, as a crash would (tests); the supervisor restarts it."""
        self.handle.kill()

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop supervising, then stop the server (SIGTERM, SIGKILL after ``timeout``)."""
        self._stopping.set()
        self._thread.join()
        return self.handle.stop(timeout)

    def __enter__(self) -> SupervisedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_supervised_server(config_path: str | Path | None = None, *, data_dir: str | Path, host: str = "127.0.0.1",
                            token: str | None = None, overrides: Iterable[str] = (),
                            startup_timeout_s: float = 60.0, **supervisor: float) -> SupervisedServer:
    """A :class:`SupervisedServer` over :func:`start_server_subprocess` (same store, same port on restarts)."""
    items = list(overrides)

    def start(port: int) -> ServerHandle:
        return start_server_subprocess(config_path, host=host, port=port, data_dir=data_dir, token=token,
                                       overrides=items, startup_timeout_s=startup_timeout_s)

    return SupervisedServer(start, **supervisor)
