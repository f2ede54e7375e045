"""Helpers of the job service: a worker's call in its own thread under a deadline, plugins by name.

Split from :mod:`syngrpo.synthesis.server.workers` (which re-exports them).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from collections.abc import Callable
from typing import Any

from syngrpo.plugins import Registry
from syngrpo.synthesis.pipeline import job_deadline


class CallTimeout(Exception):
    """A call in a worker thread ran past its time-out; ``call`` settles when the thread returns."""

    def __init__(self, message: str, call: asyncio.Future[Any]) -> None:
        super().__init__(message)
        self.call = call


async def call_in_thread(fn: Callable[..., Any], *args: Any, timeout: float | None = None, name: str = "syngrpo-call"
                         ) -> Any:
    """Run ``fn(*args)`` in a fresh daemon thread under a deadline of ``timeout`` seconds.

    Raises :class:`CallTimeout` after ``timeout`` seconds.  A daemon thread, not an executor: a
    hung call must neither block the next one nor keep the process alive at exit.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def target() -> None:
        try:
            with job_deadline(timeout):
                value, ok = fn(*args), True
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is gone (server stopped while this call hung)
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
    # asyncio.wait, not wait_for: on Python < 3.12 wait_for swallows a cancellation that arrives
    # just as the call returns (it returns the result instead), and a worker that missed its
    # cancellation kept waiting for jobs, so the server's stop hung forever.  asyncio.wait always
    # lets the cancellation through and, like a shield, never cancels the call's future.
    try:
        await asyncio.wait((fut,), timeout=timeout)
    except asyncio.CancelledError:
        fut.add_done_callback(_retrieve)  # the call's late outcome is nobody's now
        raise
    if not fut.done():
        raise CallTimeout(f"timed out after {timeout:g} s", fut)
    return fut.result()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a late outcome retrieved, so asyncio logs no 'exception was never retrieved'."""
    if not fut.cancelled():
        fut.exception()


def make_plugin(registry: Registry, kind: str, name: str, options: dict[str, Any], device: str) -> Any:
    """``registry.create`` with ``device`` passed when the factory accepts it and the options lack it."""
    factory = registry.get(kind, name).factory
    opts = dict(options)
    if "device" not in opts:
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if "device" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            opts["device"] = device
    return factory(**opts)


def load_plugin_modules(names: list[str]) -> list[object]:
    """The modules a server config lists under ``plugins:`` (module names or ``.py`` files), registered like
    entry-point plugins: the trainer's ``plugins:`` key goes through the same loader."""
    from syngrpo.plugins import load_local_plugins

    return load_local_plugins(names)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(s)))
    return s[min(rank, len(s)) - 1]
