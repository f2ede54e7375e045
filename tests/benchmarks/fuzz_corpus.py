"""A corpus of malformed HTTP requests for the data server (issue 24): headers, encodings, bodies, routes.

Deterministic for a seed, so a failing case can be named and replayed (:func:`corpus` returns each
with a name saying what it is).  Eight families, drawn in turn:

* ``auth``: Authorization values no client sends (bytes that are not UTF-8, 8 KB long, wrong schemes);
* ``length``: Content-Length that is negative, not a number, huge, doubled, beside Transfer-Encoding;
* ``chunked``: chunked bodies with bad sizes, extensions, a missing last chunk;
* ``encoding``: Content-Encoding that lies (gzip that is not, truncated, doubled, bombs past the limit,
  br/zstd/unknown names);
* ``ctype``: Content-Type values of every kind;
* ``body``: mutations of a valid job: wrong types, huge or non-finite numbers, deep nesting, lone
  surrogates, invalid UTF-8, strings past every limit, broken and hostile images;
* ``route``: methods, paths (encoded NULs, traversals, very long), queries with bad values, versions;
* ``header``: header lines without a colon, with NULs or bare LFs, folded, too many, too long.

Every request carries ``Connection: close`` and a valid token unless it fuzzes the token; a request
cut short is marked ``half_close`` (the sender shuts its side, as a client that gave up does).
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import random
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

FAMILIES = ("auth", "length", "chunked", "encoding", "ctype", "body", "route", "header")


@dataclass
class Case:
    name: str
    data: bytes
    half_close: bool = False


def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 200, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


PNG_B64 = base64.b64encode(_png()).decode()


def valid_job(key: str) -> dict:
    return {"key": key, "image": PNG_B64, "boxes": [[10, 12, 40, 42]], "labels": ["red circle"],
            "description": "a green striped wall", "options": {}, "seed": 0}


class Builder:
    """Raw request bytes: the request line, headers (bytes allowed), a body; ``Connection: close`` always."""

    def __init__(self, token: str) -> None:
        self.token = token

    def request(self, method: bytes | str, path: bytes | str, headers: list[tuple[bytes | str, bytes | str]] = (),
                body: bytes = b"", *, auth: bool = True, length: bool = True, version: bytes = b"HTTP/1.1",
                raw_headers: bytes = b"") -> bytes:
        def b(x: bytes | str) -> bytes:
            return x if isinstance(x, bytes) else x.encode("utf-8", "surrogateescape")

        lines = [b(method) + b" " + b(path) + b" " + version, b"Host: 127.0.0.1"]
        names = set()
        for k, v in headers:
            names.add(b(k).lower())
            lines.append(b(k) + b": " + b(v))
        if auth and b"authorization" not in names:
            lines.append(b"Authorization: Bearer " + self.token.encode())
        if length and body and b"content-length" not in names and b"transfer-encoding" not in names:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n" + raw_headers + b"\r\n" + body

    def post_json(self, body: bytes, extra: list[tuple[bytes | str, bytes | str]] = (), **kw) -> bytes:
        return self.request("POST", "/v1/jobs", [("Content-Type", "application/json"), *extra], body, **kw)


def _auth(r: random.Random, b: Builder, i: int) -> Case:
    token = b.token.encode()
    values = [
        bytes(r.randrange(128, 256) for _ in range(r.randrange(1, 40))),
        b"Bearer " + bytes(r.randrange(128, 256) for _ in range(r.randrange(1, 40))),
        b"Bearer " + token + bytes([r.randrange(128, 256)]),
        b"bearer " + token, b"Basic " + base64.b64encode(b"user:" + token), b"Bearer", b"Bearer  " + token,
        b"Bearer " + b"x" * r.randrange(1000, 7000), token, b"Bearer " + token[:-1],
        b"Bearer " + "é".encode("latin-1") * 8, b"Bearer " + "ü".encode() * 8,
    ]
    value = values[i % len(values)]
    path = r.choice(["/v1/jobs", "/metrics", "/v1/jobs/" + "a" * 32, "/healthz"])
    if path == "/v1/jobs" and r.random() < 0.5:
        return Case(f"auth:{i % len(values)}:post", b.post_json(json.dumps(valid_job(f"a{i}")).encode(),
                                                                  [(b"Authorization", value)]))
    return Case(f"auth:{i % len(values)}:{path}", b.request("GET", path, [(b"Authorization", value)]))


def _length(r: random.Random, b: Builder, i: int) -> Case:
    body = json.dumps(valid_job(f"l{i}")).encode()
    variants = [
        [("Content-Length", "-1")], [("Content-Length", "abc")], [("Content-Length", "1e3")],
        [("Content-Length", "99999999999999999999999")], [("Content-Length", str(len(body))),
                                                           ("Content-Length", str(len(body) + 1))],
        [("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")], [("Content-Length", "+5")],
        [("Content-Length", f" {len(body)} ")], [("Content-Length", "0x10")], [("Content-Length", "")],
        [("Content-Length", str(len(body) - 10))], [("Content-Length", str(10**12))],
    ]
    k = i % len(variants)
    half = k in (10,)  # fewer bytes announced than sent: the rest is garbage on the connection
    return Case(f"length:{k}", b.post_json(body, variants[k], length=False), half_close=half)


def _chunked(r: random.Random, b: Builder, i: int) -> Case:
    body = json.dumps(valid_job(f"c{i}")).encode()
    good = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    variants = [
        b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        f"{len(body) + 50:x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
        f"{len(body):x};ext=1\r\n".encode() + body + b"\r\n0\r\n\r\n",
        f"{len(body):x}\r\n".encode() + body + b"\r\n",  # no last chunk
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\nxx\r\n0\r\n\r\n",
        good.replace(b"\r\n", b"\n"),
        good + b"garbage after the last chunk",
        b"0\r\n\r\n",
    ]
    k = i % len(variants)
    te = r.choice(["chunked", "chunked", "gzip, chunked", "Chunked", "chunked, chunked", "identity, chunked"])
    half = k in (1, 3)
    return Case(f"chunked:{k}:{te}", b.post_json(variants[k], [("Transfer-Encoding", te)], length=False),
                half_close=half)


@functools.lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    """~40 KB of gzip that inflates to 40 MB of JSON (more than the server's request limit)."""
    return gzip.compress(b'{"key": "bomb", "description": "' + b"d" * 40_000_000 + b'"}', compresslevel=9)


def _encoding(r: random.Random, b: Builder, i: int) -> Case:
    job = json.dumps(valid_job(f"e{i}")).encode()
    bomb = _gzip_bomb()
    variants = [
        ("gzip", bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))),
        ("deflate", bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))),
        ("gzip", gzip.compress(job)[: r.randrange(1, 30)]),
        ("deflate", zlib.compress(job)[:-r.randrange(1, 8)]),
        ("gzip", gzip.compress(gzip.compress(job))),
        ("gzip, gzip", gzip.compress(gzip.compress(job))),
        ("br", b"\x8b\x02\x80hello\x03"), ("zstd", b"\x28\xb5\x2f\xfd" + job), ("x-gzip", gzip.compress(job)),
        ("compress", job), ("GZIP", gzip.compress(job)), ("gzip", bomb),
        ("deflate", zlib.compress(b"[" * 200_000 + b"]" * 200_000)),
        ("gzip", gzip.compress(b"\xff\xfe" * 1000)), ("identity", job), ("", job),
        ("deflate", zlib.compressobj(wbits=-15).compress(job) + zlib.compressobj(wbits=-15).flush()),
    ]
    k = i % len(variants)
    enc, body = variants[k]
    return Case(f"encoding:{k}:{enc or 'empty'}", b.post_json(body, [("Content-Encoding", enc)]))


def _ctype(r: random.Random, b: Builder, i: int) -> Case:
    body = json.dumps(valid_job(f"t{i}")).encode()
    types = ["text/plain", "application/json; charset=latin-1", "application/json; charset=\xff",
             "multipart/form-data", "multipart/form-data; boundary=", "application/x-www-form-urlencoded",
             "application/json;;;", "*/*", "application/json" + "x" * 2000, "image/png", "", "application",
             "application/json; charset=utf-32"]
    t = types[i % len(types)]
    return Case(f"ctype:{i % len(types)}", b.post_json(body, [(b"Content-Type", t.encode("latin-1"))]))


def _body(r: random.Random, b: Builder, i: int) -> Case:
    job = valid_job(f"b{i}")
    field = r.choice(list(job))
    weird = [None, True, -1, 2**70, 1e308, [], {}, "", "x" * r.randrange(1000, 300_000), [[[[[]]]]],
             {"a": {"b": {"c": [1, 2, {"d": None}]}}}, [0.1] * 50, ["s"] * 2000, -0.0, "\u0000", "\ud7ff"]
    kind = i % 12
    if kind == 0:
        job[field] = r.choice(weird)
        raw = json.dumps(job).encode()
    elif kind == 1:
        raw = json.dumps(job).encode().replace(b"0]]", b"NaN]]", 1).replace(b'"seed": 0', b'"seed": Infinity')
    elif kind == 2:
        raw = b'{"key": "deep", "options": {"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}"
    elif kind == 3:
        raw = json.dumps(job).encode().replace(b"a green", b"a \\ud800 green")
    elif kind == 4:
        raw = json.dumps(job).encode().replace(b"a green", b"a \xff\xfe green")
    elif kind == 5:
        raw = json.dumps(job).encode()[: r.randrange(1, 200)]
    elif kind == 6:
        job["image"] = r.choice([base64.b64encode(_png_claiming(60000, 60000)).decode(), "%%%",
                                 base64.b64encode(b"GIF89a" + b"\x00" * 30).decode(), PNG_B64[:-8],
                                 base64.b64encode(_png((1, 1))).decode(), "=" * 8])
        raw = json.dumps(job).encode()
    elif kind == 7:
        job["options"] = r.choice([{"distractor_classes": ["x" * 50_000] * 8}, {"distractors": 10**9},
                                   {"synthesizer": "nope"}, {"clutter": -1}, {"tones": ["vivid"]},
                                   {"distractor_classes": list(range(100))}, {"x" * 5000: 1}])
        raw = json.dumps(job).encode()
    elif kind == 8:
        job["boxes"] = r.choice([[[0, 0, 1e308, 1e308]], [[1, 2, 3]] * 500, [[5, 5, 1, 1]], [[-1, -1, 2, 2]],
                                 [list(range(10_000))], [[0, 0, 10, 10]] * 5000, "boxes"])
        raw = json.dumps(job).encode()
    elif kind == 9:
        raw = bytes(r.randrange(256) for _ in range(r.randrange(1, 2000)))
    elif kind == 10:
        raw = b'{"key": "dup", "key": "dup2", ' + json.dumps(job).encode()[1:]
    else:
        job["labels"] = r.choice([["x" * 100_000], [""], [None], ["a"] * 10_000, "red"])
        raw = json.dumps(job).encode()
    path = r.choice(["/v1/jobs", "/v1/jobs", "/v1/jobs/query", "/v1/jobs/delete"])
    return Case(f"body:{kind}:{field}:{path}", b.request("POST", path, [("Content-Type", "application/json")], raw))


def _route(r: random.Random, b: Builder, i: int) -> Case:
    methods = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE", b"CONNECT", b"BREW",
               b"G\x00T", b"get"]
    paths = [b"/v1/jobs/%00", b"/v1/jobs/..%2f..%2fetc%2fpasswd", b"/v1/jobs/" + b"f" * 32 + b"/result.png",
             b"/v1/jobs?limit=-1", b"/v1/jobs?limit=99999999999999999999", b"/v1/jobs?after=-5",
             b"/v1/jobs?state=" + b"x" * 3000, b"/v1/jobs?ids=" + b",".join([b"a" * 32] * 230),
             b"/v1/jobs?ids=%ff%fe", b"/" + b"a" * 7000, b"/\xff\xfe", b"*", b"http://evil.example/v1/jobs",
             b"/v1/jobs/" + b"A" * 32 + b"/cancel", b"/v1/jobs?key=%0a", b"//v1//jobs", b"/healthz?x=\x01",
             b"/metrics/../v1/jobs", b"/v1/jobs/query?", b"/v1/jobs/" + "é".encode() * 16]
    versions = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/9.9", b"HTTP", b"FTP/1.1"]
    m, p, v = methods[i % len(methods)], r.choice(paths), r.choice(versions)
    body = json.dumps(valid_job(f"r{i}")).encode() if m in (b"POST", b"PUT", b"PATCH") else b""
    return Case(f"route:{m!r}:{v.decode(errors='replace')}",
                b.request(m, p, [("Content-Type", "application/json")], body, version=v))


def _header(r: random.Random, b: Builder, i: int) -> Case:
    body = json.dumps(valid_job(f"h{i}")).encode()
    variants = [
        b"NoColonHere\r\n", b"Bad Name: x\r\n", b"X-Nul: a\x00b\r\n", b"X-Fold: a\r\n  continued\r\n",
        b"".join(b"X-Many-%d: v\r\n" % n for n in range(300)), b"X-Long: " + b"v" * 20_000 + b"\r\n",
        b"X-Bare-LF: v\n", b": empty-name\r\n", b"X-\xff\xfe: v\r\n", b"Content-Type: application/json\r\n" * 5,
        b"Expect: 100-continue\r\n", b"Expect: bogus\r\n", b"Upgrade: websocket\r\nConnection: upgrade\r\n",
        b"Host: a\r\nHost: b\r\n", b"X-Ctl: \x7f\x1b[31m\r\n",
    ]
    k = i % len(variants)
    return Case(f"header:{k}", b.post_json(body, raw_headers=variants[k]))


_MAKERS = {"auth": _auth, "length": _length, "chunked": _chunked, "encoding": _encoding, "ctype": _ctype,
           "body": _body, "route": _route, "header": _header}


def corpus(n: int, token: str, seed: int = 0) -> list[Case]:
    """``n`` malformed requests (the families in turn), deterministic for ``seed``."""
    r = random.Random(seed)
    b = Builder(token)
    return [_MAKERS[FAMILIES[i % len(FAMILIES)]](r, b, i // len(FAMILIES)) for i in range(n)]
