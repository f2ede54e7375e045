"""Issue 24: a fuzz corpus of malformed requests against a real ``syngrpo serve``: 0 × 5xx, 0 hangs, healthy after each.

The corpus (:mod:`.fuzz_corpus`, deterministic for its seed) covers headers, encodings and bodies:
Authorization bytes that are not UTF-8, lying Content-Length and Transfer-Encoding, Content-Encoding
that is not what it says (and gzip bombs), Content-Type of every kind, mutated job bodies, odd
routes and versions, malformed header lines.  Each request goes on its own connection from raw
bytes; then ``GET /healthz`` (with the token) must answer ``200 ok``.  At the end the server's log
must hold no traceback and no ERROR line.

Figures: requests sent, 5xx answers (target 0), hangs (no answer and no close within
``HANG_S``; target 0), health checks failed (target 0), and the answers by status.
"""

from __future__ import annotations

import collections
import json
import socket
import time
import urllib.request

import pytest

from .fuzz_corpus import corpus
from .support import core_plan, start_server, thread_affinity

pytestmark = pytest.mark.benchmark

TOKEN = "fuzz-token-Qm7pX2vL9sK4wZ8r"
HANG_S = 15.0


def send(host: str, port: int, data: bytes, half_close: bool) -> tuple[int, float]:
    """(status, seconds): status 0 when the server closed the connection without an answer; TimeoutError on a hang."""
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=HANG_S) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
            if len(got) > 1 << 20:
                break
    first = got.split(b"\r\n", 1)[0].split(b" ")
    status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
    return status, time.monotonic() - t0


def healthy(url: str) -> bool:
    req = urllib.request.Request(url + "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    except OSError:
        return False


def test_500_malformed_requests_get_no_5xx_no_hang_and_leave_the_server_healthy(tmp_path, figures, quick):
    n = 520 if quick else 1040
    cases = corpus(n, TOKEN, seed=24)
    cores = core_plan()
    server = start_server(tmp_path / "server", cores[1], token=TOKEN, max_request_bytes=1024 * 1024,
                          max_body_bytes_in_flight=8 * 1024 * 1024, body_timeout_s=3.0, read_timeout_s=5.0)
    statuses: collections.Counter[int] = collections.Counter()
    fivexx, hangs, unhealthy = [], [], []
    slowest = 0.0
    try:
        with thread_affinity(cores[0]):
            t0 = time.monotonic()
            for case in cases:
                try:
                    status, seconds = send(server.host, server.port, case.data, case.half_close)
                except TimeoutError:
                    hangs.append(case.name)
                    status, seconds = -1, HANG_S
                except OSError as exc:  # refused outright: no 5xx, but say so
                    status, seconds = 0, 0.0
                    statuses[f"refused:{type(exc).__name__}"] += 1  # type: ignore[index]
                statuses[status] += 1
                slowest = max(slowest, seconds)
                if status >= 500:
                    fivexx.append((case.name, status))
                if not healthy(server.url):
                    unhealthy.append(case.name)
            elapsed = time.monotonic() - t0
        log = server.log_tail(10**8)
    finally:
        server.stop()
    by_status = {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))}
    figures("Server fuzz: malformed requests sent", len(cases), unit="requests", target=">= 500",
            met=len(cases) >= 500, seconds=elapsed, by_status=by_status)
    figures("Server fuzz: 5xx answers", len(fivexx), unit="answers", target="0", met=not fivexx,
            cases=fivexx[:20])
    figures("Server fuzz: hangs", len(hangs), unit="requests", target="0", met=not hangs, cases=hangs[:20],
            slowest_s=slowest)
    figures("Server fuzz: health checks failed after a case", len(unhealthy), unit="checks", target="0",
            met=not unhealthy, cases=unhealthy[:20])
    assert not fivexx, fivexx[:20]
    assert not hangs, hangs[:20]
    assert not unhealthy, unhealthy[:20]
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
