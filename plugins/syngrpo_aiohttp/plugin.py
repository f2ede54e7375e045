"""Entry-point module: the ``aiohttp`` transport (HTTP client of one or more data servers)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def aiohttp_transport(**options):
    """HTTP client of data servers: timeouts, retries with backoff, load spreading, bearer token, 429 aware."""
    from syngrpo_aiohttp.client import AiohttpTransport

    return AiohttpTransport(**options)


# the class whose keyword options `syngrpo check` matches the config's options against
aiohttp_transport.options_from = "syngrpo_aiohttp.client:AiohttpTransport"  # type: ignore[attr-defined]


@hookimpl
def register_transports(register):
    register("aiohttp", aiohttp_transport)
