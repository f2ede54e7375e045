"""Connections: never more than the process can hold, idle ones make room, refusals logged once a minute.

Every connection holds a file descriptor.  At the common limit of 1,024 descriptors, 1,100 idle
sockets left none for ``accept()``: asyncio logged a traceback for every failed accept (80,610 of
them, 34.7 MB of log, in ~25 s) and the server answered nobody for ~30 s (issue 24, item 4).  So:

- the server keeps ``max_connections`` connections at most, by default what its descriptor limit
  leaves after the descriptors it already uses and a reserve for its files, database and threads
  (:func:`default_max_connections`; at start-up the soft limit is raised to the hard one, as
  servers usually do);
- at that cap a new connection closes the connection idle the longest (no request in progress: a
  keep-alive connection, or one that never sent its headers), so a real client still gets in while
  a crowd of idle sockets is being shed; when every connection is busy with a request the new one is
  closed at once (the client sees a reset, never a hang);
- refusals and evictions are counted (``/metrics``) and logged once per ``LOG_INTERVAL_S``, not per
  event; asyncio's own "accept out of resources" error, should it still happen, is logged the same way
  (:func:`quiet_accept_errors`).

The guard is kept on the application (``app[CONNECTIONS]``, for ``/metrics``) and applied by the
server's connection handler (:mod:`.runner`); the test server of ``pytest-aiohttp`` does not use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from typing import Any

from aiohttp import web

log = logging.getLogger("syngrpo.synthesis.server")

LOG_INTERVAL_S = 60.0
"""At most one log line per this many seconds about refused or evicted connections (and accept errors)."""

FD_RESERVE = 64
"""Descriptors kept free beyond those open at start-up: job files, the database's WAL, threads, logs.

On top of it the listen backlog is kept free: asyncio accepts up to a backlog of connections in one
go before the first of them is counted here (:meth:`ConnectionGuard.admit` runs in ``connection_made``)."""


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft descriptor limit to its hard limit (capped at 1,048,576); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    target = min(target, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a container that forbids it: keep the soft limit
            pass
    return soft, hard


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return 32


def default_max_connections(backlog: int = 128) -> int:
    """What the descriptor limit leaves for connections: the soft limit, less those open now, a reserve
    and the listen backlog (at 1,024 descriptors: about 820)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, min(100_000, soft - open_descriptors() - FD_RESERVE - backlog))


class ConnectionGuard:
    """Counts open connections, makes room at the cap by closing the longest-idle one, refuses otherwise."""

    def __init__(self, max_connections: int | None = None) -> None:
        self.configured = max_connections
        self.limit = max_connections or 0  # set by :meth:`start` when not configured
        self.live: dict[Any, float] = {}  # handler -> time of its last activity (insertion order: oldest first)
        self.refused = 0
        self.evicted = 0
        self._logged_at = 0.0
        self._unlogged_refused = 0
        self._unlogged_evicted = 0

    @property
    def open(self) -> int:
        return len(self.live)

    def start(self, backlog: int = 128) -> int:
        """Fix the cap (from the descriptor limit and the listen ``backlog`` when not configured); returns it."""
        if not self.configured:
            self.limit = default_max_connections(backlog)
        return self.limit

    def touch(self, handler: Any) -> None:
        """``handler``'s connection did something: it is the newest, the last to be evicted."""
        if handler in self.live:
            self.live.pop(handler)
            self.live[handler] = time.monotonic()

    def admit(self, handler: Any) -> bool:
        """Whether a new connection may stay (``handler`` is then counted); makes room at the cap if it can."""
        if self.limit and len(self.live) >= self.limit:
            victim = next((h for h in self.live if _idle(h)), None)
            if victim is None:
                self.refused += 1
                self._unlogged_refused += 1
                self._log()
                return False
            self.live.pop(victim, None)
            self.evicted += 1
            self._unlogged_evicted += 1
            _close(victim)
            self._log()
        self.live[handler] = time.monotonic()
        return True

    def release(self, handler: Any) -> None:
        self.live.pop(handler, None)

    def _log(self) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_INTERVAL_S:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning("at max_connections (%d open, limit %d, descriptor limit %d): %d connection(s) refused and %d "
                    "idle one(s) closed since the last report (next report in %.0f s at most)",
                    len(self.live), self.limit, soft, self._unlogged_refused, self._unlogged_evicted, LOG_INTERVAL_S)
        self._logged_at = now
        self._unlogged_refused = self._unlogged_evicted = 0


def _idle(handler: Any) -> bool:
    """No request in progress on this connection (aiohttp's flag; a connection without it counts as busy)."""
    return getattr(handler, "_request_in_progress", True) is False


def _close(handler: Any) -> None:
    transport = getattr(handler, "transport", None)
    try:
        handler.force_close()
    except Exception:  # noqa: BLE001 - closing the transport below is what matters
        pass
    if transport is not None:
        transport.close()


CONNECTIONS: web.AppKey[ConnectionGuard] = web.AppKey("syngrpo_connections", ConnectionGuard)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "socket.accept() out of system resource" once per ``LOG_INTERVAL_S`` with a count,
    without a traceback; every other loop error goes to the handler that was there."""
    previous = loop.get_exception_handler()
    state = {"at": 0.0, "count": 0}

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" in str(context.get("message", "")) and isinstance(context.get("exception"), OSError):
            state["count"] += 1
            now = time.monotonic()
            if now - state["at"] >= LOG_INTERVAL_S:
                exc = context["exception"]
                log.warning("cannot accept connections: %s (%d time(s) since the last report); raise the "
                            "descriptor limit or lower max_connections", exc, state["count"])
                state["at"], state["count"] = now, 0
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
