"""A Ray cluster of one node on 127.0.0.1 for tests and benchmarks (``ray start --head --block``, owned here).

Every port is picked free on loopback and the session lives in a temporary folder of its own, so two such
clusters (two engineers, two test runs) never meet, and nothing listens beyond 127.0.0.1.  The head runs
in a process group of its own, stopped by that group's id (never ``ray stop``, which ends every Ray process
of the user).  Ray's own node-IP lookup would pick the machine's outward address; ``RAY_ENABLE_WINDOWS_OR_OSX_
CLUSTER=0`` makes the head and its workers take the loopback one (a driver joining it gets the same switch
from :mod:`syngrpo_ray.address`).  Real clusters are started with Ray's own commands (docs/data-server.md, "Ray").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from syngrpo_ray.address import LOOPBACK_SWITCH

#: environment every process of a loopback cluster needs (the head, its workers, drivers that connect)
LOOPBACK_ENV = {LOOPBACK_SWITCH: "0", "RAY_USAGE_STATS_ENABLED": "0"}

_PORT_FLAGS = ("ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
               "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``start()`` returns the address (``127.0.0.1:PORT``); ``stop()`` ends every process of the head's group."""

    def __init__(self, num_cpus: int = 2, num_gpus: int = 0, object_store_bytes: int = 200_000_000,
                 resources: str | None = None) -> None:
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.object_store_bytes = object_store_bytes
        self.resources = resources
        # short: Ray's unix sockets live under it (a socket path has at most 107 characters)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="syngrpo-ray-"))
        self.log_path = self.temp_dir / "head.log"
        self.address: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment a process connecting to this cluster should run with."""
        out = {**os.environ, **LOOPBACK_ENV}
        if self.address:
            out["RAY_ADDRESS"] = self.address
        return out

    def start(self, timeout: float = 120.0) -> str:
        port = free_port()
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
               f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}", "--include-dashboard=false",
               f"--object-store-memory={self.object_store_bytes}", f"--temp-dir={self.temp_dir}",
               "--disable-usage-stats", *(f"--{flag}={free_port()}" for flag in _PORT_FLAGS)]
        if self.resources:
            cmd.append(f"--resources={self.resources}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **LOOPBACK_ENV}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
                self.stop()
                raise RuntimeError(f"the local Ray head did not start: {tail}")
            time.sleep(0.2)
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the head leads its own group
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.1)
            if not _group_alive(pgid):
                break
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
