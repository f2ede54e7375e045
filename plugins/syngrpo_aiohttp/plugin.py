"""Entry-point module: the ``aiohttp`` transport (HTTP client of one or more data servers)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def aiohttp_transport(**options):
    """HTTP client of data servers: timeouts, retries with backoff, load spreading, bearer token, 429 aware."""
    from syngrpo_aiohttp.client import AiohttpTransport

    return AiohttpTransport(**options)


@hookimpl
def register_transports(register):
    register("aiohttp", aiohttp_transport)
