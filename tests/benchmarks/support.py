"""Timing helpers of the benchmark suite (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant, the variants alternating round by round (noise hits all alike)."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants.items())
        if r % 2:
            order.reverse()  # neither variant always runs first (caches, allocator state)
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# ---- cores and processes ---------------------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent.parent


def core_plan() -> tuple[set[int] | None, set[int] | None]:
    """(cores of this process, cores of the data server): one core each when there are two or more.

    ``(None, None)`` when the machine offers a single core (nothing to pin apart).
    """
    if not hasattr(os, "sched_getaffinity"):  # pragma: no cover - not Linux
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


@contextmanager
def thread_affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the calling thread (and the threads and processes it starts) on ``cpus``; restored after."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def server_env() -> dict[str, str]:
    """The environment of a benchmark server: one thread per library, ``tests/`` importable (plugins)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env


def start_server(data_dir: Path, cpus: set[int] | None, *, token: str | None = None, **keys: Any) -> Any:
    """A real ``syngrpo serve`` child process on 127.0.0.1 (free port), started on ``cpus``; ``token`` goes
    in its environment, as ``syngrpo serve`` users are told to pass it."""
    import json

    from syngrpo.synthesis.server.spawn import start_server_subprocess

    overrides = [f"{k}={json.dumps(v)}" for k, v in keys.items()]
    with thread_affinity(cpus):
        return start_server_subprocess(None, data_dir=data_dir, overrides=overrides, env=server_env(),
                                       token=token, startup_timeout_s=120.0, wait_ready=True)


def server_health(url: str) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def wait_idle(url: str, timeout: float = 120.0) -> None:
    """Until the server's queue is empty and no worker is busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = server_health(url)
        if h["queue_depth"] == 0 and all(w.get("state") != "busy" for w in h["workers"]):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the server at {url} did not drain in {timeout:g} s")
