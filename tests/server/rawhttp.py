"""Raw HTTP/1.1 over a plain socket: requests no HTTP client library would send.

aiohttp's client (like every well-behaved one) refuses to send a header that is not valid text,
mislabels no body's encoding and never stalls halfway through a body.  The hostile requests of the
reliability tests (tests/server/test_hostile_requests.py) and of the fuzz benchmark
(tests/benchmarks/test_bench_server_fuzz.py) need exactly those, so they are written byte by byte.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawAnswer:
    """What the server sent back: ``status`` 0 when it closed the connection without an answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The ``error.code`` of a JSON error body (``None`` when there is none)."""
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


def request_bytes(method: str, path: str, headers: list[tuple[str | bytes, str | bytes]], body: bytes = b"",
                  *, content_length: bool = True) -> bytes:
    """One request as bytes; header names and values may be ``bytes`` (anything at all goes through)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    names = set()
    for name, value in headers:
        n = name.encode("latin-1") if isinstance(name, str) else name
        v = value.encode("latin-1") if isinstance(value, str) else value
        names.add(n.lower())
        lines.append(n + b": " + v)
    if content_length and body and b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_answer(data: bytes) -> RawAnswer:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return RawAnswer(0, body=data)
    first, *rest = head.split(b"\r\n")
    parts = first.split(b" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return RawAnswer(0, body=data)
    headers = {}
    for line in rest:
        k, _, v = line.partition(b":")
        headers[k.strip().decode("latin-1").lower()] = v.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawAnswer(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def send_raw(host: str, port: int, data: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``timeout``: TimeoutError)."""
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: read what it said
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    answer = parse_answer(got)
    answer.seconds = time.monotonic() - t0
    return answer
