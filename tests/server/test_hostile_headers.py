"""Issue 24 item 4: headers and encodings no client library sends get a 4xx, never a 500 and a traceback.

Sent as raw bytes on a socket (:mod:`.rawhttp`) to a real server on 127.0.0.1; after each the
server answers ``/healthz`` and has logged no error.
"""

from __future__ import annotations

import logging
import zlib

import pytest

from .rawhttp import request_bytes, send_raw
from .support import job_body

TOKEN = "a-long-enough-token-for-tests"


@pytest.fixture
async def token_server(serve, config_for):
    return await serve(config_for(token=TOKEN))


@pytest.fixture
async def open_server(serve, config_for):
    return await serve(config_for())


def _no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe\xfd", b"\xc3\x28", b"Bearer " + "é".encode("latin-1"),
                                   b"Bearer \x80" * 3])
async def test_a_non_utf8_authorization_header_on_a_token_server_is_401_not_500(token_server, caplog, value):
    srv = token_server
    answer = await _send(srv, request_bytes("GET", "/v1/jobs", [(b"Authorization", value)]))
    assert answer.status == 401, answer
    assert answer.code == "unauthorized"
    assert (await token_server.session.get("/healthz")).status == 200
    _no_errors_logged(caplog)


@pytest.mark.parametrize(("encoding", "body"), [
    ("deflate", b"this is not a deflate stream at all"),
    ("deflate", zlib.compress(b'{"key": "x"}')[:-6]),  # cut short
    ("gzip", b"\x1f\x8b\x08\x00garbage-after-the-magic"),
])
async def test_a_malformed_compressed_body_is_400_bad_encoding_not_500(open_server, caplog, encoding, body):
    srv = open_server
    data = request_bytes("POST", "/v1/jobs", [("Content-Type", "application/json"), ("Content-Encoding", encoding)],
                         body)
    answer = await _send(srv, data)
    assert answer.status == 400, answer
    assert answer.code == "bad_encoding"
    assert encoding in answer.json()["error"]["message"]
    assert (await open_server.session.get("/healthz")).status == 200
    ok = await open_server.session.post("/v1/jobs", json=job_body("after-bad-encoding"))
    assert ok.status == 201
    _no_errors_logged(caplog)


async def test_an_unknown_content_encoding_is_415_naming_the_ones_taken(open_server, caplog):
    srv = open_server
    data = request_bytes("POST", "/v1/jobs", [("Content-Type", "application/json"), ("Content-Encoding", "zstd")],
                         b"\x28\xb5\x2f\xfd" + b"x" * 40)
    answer = await _send(srv, data)
    assert answer.status == 415, answer
    assert answer.code == "unsupported_encoding"
    assert "gzip" in answer.json()["error"]["message"] and "deflate" in answer.json()["error"]["message"]
    _no_errors_logged(caplog)


async def _send(srv, data: bytes):
    import asyncio

    return await asyncio.to_thread(send_raw, srv.host, srv.port, data)


@pytest.mark.parametrize("path", ["/v1/jobs/query", "/v1/jobs/delete"])
async def test_json_nested_past_the_parsers_depth_is_400_not_500(open_server, caplog, path):
    """Found by the fuzz benchmark: ``json.loads`` raises RecursionError, not ValueError, on 20,000 ``[``."""
    body = b'{"ids": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    resp = await open_server.session.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "bad_json"
    _no_errors_logged(caplog)
