"""Starting a data server as a child process (the trainer's quickstart, tests, notebooks).

    handle = start_server_subprocess(None, data_dir=run_dir / "server")
    transport = registry.create("transports", "aiohttp", urls=[handle.url])
    ...
    handle.stop()

The child is ``python -m syngrpo.server``; with ``port=0`` it binds a free port and reports it in
a ready file, and this function returns once ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from syngrpo.errors import SyngrpoError
from syngrpo.server.config import TOKEN_ENV


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


def _get(url: str, timeout: float) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback URL
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
) -> ServerHandle:
    """Start ``syngrpo serve`` in a child process and wait until it answers ``/healthz``.

    ``port=0`` picks a free port (read back from the child's ready file).  ``data_dir`` overrides
    the config's (None keeps it).  ``token`` is handed over in ``$SYNGRPO_SERVER_TOKEN``, never on
    the command line.  ``wait_ready`` also waits until every worker has loaded its models.
    The child's output goes to ``log_path`` (default: a file next to the ready file, or
    ``data_dir/server.log``).  Raises :class:`ServerStartError` with the log's tail on failure.
    """
    tmp = tempfile.TemporaryDirectory(prefix="syngrpo-server-")
    ready = Path(tmp.name) / "ready.json"
    if log_path is None:
        log_path = (Path(data_dir) / "server.log") if data_dir is not None else Path(tmp.name) / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "syngrpo.server", "--host", host, "--port", str(port), "--ready-file", str(ready)]
    if config_path is not None:
        cmd += ["-c", str(config_path)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    for item in overrides:
        cmd += ["--set", item]
    child_env = dict(os.environ if env is None else env)
    if token is not None:
        child_env[TOKEN_ENV] = token
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=child_env,
                                stdin=subprocess.DEVNULL)
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
            status, body = _get(handle.url + "/healthz", timeout=2.0)
        except (OSError, ValueError):
            status, body = 0, {}
        if status == 200 and (not wait_ready or body.get("ready")):
            return handle
        if status == 503:
            raise fail(f"/healthz reports the server broken: {body}")
        if time.monotonic() > deadline:
            raise fail(f"/healthz did not answer 200{' ready' if wait_ready else ''} within {startup_timeout_s:g} s")
        time.sleep(0.05)
