"""Running the data server in this process until SIGTERM/SIGINT (what ``syngrpo serve`` does).

Besides binding and serving, this is where the server protects itself at the connection level:

- ``read_timeout_s`` closes a connection idle between requests or stalled before its headers
  arrive (aiohttp's keep-alive timer, which runs from the connection's start);
- errors of aiohttp's own HTTP parser (a URL or header too long, a malformed request line, a
  ``Content-Encoding`` it cannot inflate) are answered with the same JSON error shape as every
  other refusal, and logged at DEBUG;
- connections are capped below the descriptor limit, idle ones make room, and refusals are logged
  once a minute (:mod:`.connections`);
- with ``parent_pid`` (a server spawned by a trainer) the server stops when that process dies:
  ``PR_SET_PDEATHSIG`` on Linux, and a watch thread everywhere (it also covers the moment
  between the fork and the ``prctl`` call).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from syngrpo.plugins import Registry
from syngrpo.synthesis.server.config import ServerConfig, check_bind_security, check_token
from syngrpo.synthesis.server.connections import CONNECTIONS, ConnectionGuard, quiet_accept_errors, raise_fd_limit
from syngrpo.synthesis.server.files import atomic_write

log = logging.getLogger("syngrpo.synthesis.server")

_PR_SET_PDEATHSIG = 1


def format_url(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, on_gone: Callable[[], None], interval_s: float = 0.5) -> threading.Thread:
    """Call ``on_gone()`` once when ``parent_pid`` is no longer this process's parent (it died)."""

    def run() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(interval_s)
        on_gone()

    t = threading.Thread(target=run, name="syngrpo-parent-watch", daemon=True)
    t.start()
    return t


def serve(config: ServerConfig, *, registry: Registry | None = None, ready_file: str | Path | None = None,
          parent_pid: int | None = None, app_factory: Callable[[], web.Application] | None = None) -> None:
    """Bind, serve, and stop cleanly on SIGTERM or SIGINT (or when ``parent_pid`` dies).

    Once listening, writes ``{"url", "host", "port", "pid"}`` as JSON to ``ready_file`` (atomically),
    so a parent that asked for port 0 learns the port that was picked.  ``app_factory`` serves another
    application than the data server's (the read-only page of a store) with the same binding rules.
    """
    check_token(config.token, "token")
    check_bind_security(config.host, config.token)
    if parent_pid is not None:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:  # it died before prctl took effect
            log.error("the parent process %d is gone; not starting", parent_pid)
            return
    asyncio.run(_serve(config, registry, Path(ready_file) if ready_file else None, parent_pid, app_factory))


class _JsonErrorsHandler(web.RequestHandler):
    """aiohttp's connection handler, answering its parser's refusals in the API's JSON error shape and
    counting its connection against the server's :class:`~.connections.ConnectionGuard`."""

    guard: ConnectionGuard | None = None
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.guard is not None and not self.guard.admit(self):
            self._refused = True
            transport.abort()  # a reset, at once: never a connection nobody will serve
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        if self.guard is not None:
            self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.guard is not None:
            self.guard.touch(self)
        super().data_received(data)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # After a handler refused a body aiohttp could not decode (400 bad_encoding), aiohttp reads on
        # to discard the rest and meets the same payload error again: the client's fault, answered already.
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):
            log.debug("discarded the rest of an undecodable request body: %s", " ".join(str(exc).split()))
            return
        super().log_exception(*args, **kw)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        from syngrpo.synthesis.server.app import _STATUS_CODES

        text = " ".join((message or (str(exc) if exc else "bad request")).split())
        code = _STATUS_CODES.get(status, "bad_request")
        if isinstance(exc, ContentEncodingError) or "content-encoding" in text.lower():
            if "install" in text.lower():  # br or zstd, whose module is not installed
                status, code = 415, "unsupported_encoding"
                text = f"{text.split('.')[0]}; send gzip, deflate or no Content-Encoding"
            else:  # a deflate body cut short (found at its end, by the parser)
                code = "bad_encoding"
                text = f"the request body is not a valid stream of its Content-Encoding ({text})"
        elif "too long" in text.lower() or "more than" in text.lower():
            text += ("; a request line or header is too long (list many job ids with POST /v1/jobs/query "
                     "and a JSON body)")
        log.debug("refused a malformed request from %s: %s", getattr(request, "remote", "?"), text)
        body = json.dumps({"error": {"code": code, "message": text}})
        resp = web.Response(status=status, text=body, content_type="application/json")
        resp.force_close()
        return resp


class _Site(web.TCPSite):
    """A TCP site whose connections use :class:`_JsonErrorsHandler` (else the same as ``TCPSite``)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        kwargs = dict(getattr(server, "_kwargs", {}))
        app = getattr(self._runner, "app", None)
        guard = app.get(CONNECTIONS) if app is not None else None
        if guard is not None:
            limit = guard.start(self._backlog)
            log.info("serving at most %d connections at once (max_connections)", limit)

        def factory() -> web.RequestHandler:
            handler = _JsonErrorsHandler(server, loop=loop, **kwargs)
            handler.guard = guard
            return handler

        self._server = await loop.create_server(factory, self._host, self._port, backlog=self._backlog,
                                                reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


async def start_site(app: web.Application, config: ServerConfig) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``config.host``/``config.port`` the way ``syngrpo serve`` does; returns (runner, port).

    The tests that need the production connection handling (the connection cap, parser refusals in
    JSON) start their server with this instead of ``pytest-aiohttp``'s test server.
    """
    quiet_accept_errors(asyncio.get_running_loop())
    # keep-alive timer (from the connection's start in aiohttp >= 3.10) = read time-out; the wait for
    # the unread rest of a refused or stalled body is bounded the same way
    runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=config.read_timeout_s,
                           lingering_time=min(10.0, config.read_timeout_s))
    await runner.setup()
    try:
        site: web.TCPSite = _Site(runner, config.host, config.port)
        await site.start()
    except (AttributeError, TypeError):  # pragma: no cover - an aiohttp whose internals moved: plain errors
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    port = config.port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            port = int(addr[1])
            break
    return runner, port


async def _serve(config: ServerConfig, registry: Registry | None, ready_file: Path | None,
                 parent_pid: int | None = None, app_factory: Callable[[], web.Application] | None = None) -> None:
    from syngrpo.synthesis.server.app import create_app

    raise_fd_limit()
    app = app_factory() if app_factory is not None else create_app(config, registry=registry)
    runner, port = await start_site(app, config)
    url = format_url(config.host, port)
    log.info("syngrpo data server listening on %s (data in %s, workers %s)", url, config.data_dir,
             ", ".join(config.workers))
    if ready_file is not None:
        atomic_write(ready_file, json.dumps({"url": url, "host": config.host, "port": port,
                                             "pid": os.getpid()}).encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
            pass
    if parent_pid is not None:
        def parent_gone() -> None:
            log.warning("the trainer (pid %d) that started this server is gone: stopping", parent_pid)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

        watch_parent(parent_pid, parent_gone)
    try:
        await stop.wait()
    finally:
        log.info("stopping the data server")
        await runner.cleanup()
