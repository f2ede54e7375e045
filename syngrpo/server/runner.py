"""Running the data server in this process until SIGTERM/SIGINT (what ``syngrpo serve`` does)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from syngrpo.plugins import Registry
from syngrpo.server.config import ServerConfig, check_bind_security
from syngrpo.server.store import atomic_write

log = logging.getLogger("syngrpo.server")


def format_url(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: ServerConfig, *, registry: Registry | None = None, ready_file: str | Path | None = None) -> None:
    """Bind, serve, and stop cleanly on SIGTERM or SIGINT.

    Once listening, writes ``{"url", "host", "port", "pid"}`` as JSON to ``ready_file`` (atomically),
    so a parent that asked for port 0 learns the port that was picked.
    """
    check_bind_security(config.host, config.token)
    asyncio.run(_serve(config, registry, Path(ready_file) if ready_file else None))


async def _serve(config: ServerConfig, registry: Registry | None, ready_file: Path | None) -> None:
    from syngrpo.server.app import create_app

    app = create_app(config, registry=registry)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = config.port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            port = int(addr[1])
            break
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
    try:
        await stop.wait()
    finally:
        log.info("stopping the data server")
        await runner.cleanup()
