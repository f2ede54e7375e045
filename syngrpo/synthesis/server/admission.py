"""Who may send what: the client a request counts against, and the bytes of request bodies it may hold.

Its own module because these rules sit between the connection and the handlers, whatever the route:

- **A client** is the address a request comes from (:func:`client_of`): an IPv4 address, an IPv6
  /64 (one machine usually holds a whole /64), or ``local`` for a Unix socket.  Every client of a
  server shares its one bearer token, so the token cannot tell them apart; behind a reverse proxy
  every request comes from the proxy (docs/data-server.md says so).  The budgets below, the queue
  share and the fair scheduler (:mod:`.fairness`) count per client.
- **Bodies are counted as they arrive, decoded** (:class:`BodyBudget`, :func:`read_body`): a
  ``gzip`` or ``deflate`` body counts what it inflates to, not what its ``Content-Length`` says, so a
  29 KB request that inflates to 29 MB takes 29 MB of the budget (and is refused past
  ``max_request_bytes``); and a connection that announced 32 MiB but sends a byte a second holds one
  byte, not 32 MiB, so stalled bodies cannot hold the shared budget (issue 24, item 2).  A body must
  arrive whole within ``body_timeout_s`` (408).
- Each client holds at most ``client_body_bytes_in_flight`` of it (``429 client_busy``), all clients
  together ``max_body_bytes_in_flight`` (``503 busy``): the memory the server spends on bodies stays
  bounded whatever the number of connections, and one client cannot take it all.
- **Requests take turns** (:class:`RequestShare`): the server handles at most ``client_concurrency``
  requests of one client at once; its others wait their turn (up to ``client_waiting``, then ``429
  client_busy``).  The event loop serves ready requests in order of arrival, so without it a client
  with fifty requests in progress made everyone else's wait fifty times as long; with it, a client's
  share of the loop is bounded by its concurrency, whatever it sends.

- **A body's CPU work is done off the event loop, in turns** (:class:`BodyWork`): a ``gzip`` or
  ``deflate`` body is inflated here, in a thread, not by aiohttp's parser (which inflated on the
  loop: a 7 KB bomb held the loop ~10 ms while it grew to 7 MB), and large bodies are parsed in
  the same threads; each client has one such piece of work at a time, taken in turn with the
  others', so a client sending bombs cannot fill the threads and another client's small request is
  served between its pieces (issue 24: an innocent client's requests waited behind them).

Why count arrived bytes rather than reserve announced lengths: a reservation is an allocation the
client never has to pay for, and four stalled connections reserved the whole budget for 30 s
(renewable).  The price is that a refusal may come after part of a body was sent; the early check
(:meth:`BodyBudget.admit`) still refuses a body that cannot fit before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from syngrpo.synthesis.server.validation import ApiError

log = logging.getLogger("syngrpo.synthesis.server")

#: ``Content-Encoding`` values a body may have (aiohttp inflates gzip and deflate as it reads)
ACCEPTED_ENCODINGS = ("identity", "gzip", "deflate")



def request_key(name: str, kind: type) -> Any:
    """A typed key of a request's storage (``web.RequestKey``, aiohttp >= 3.13), else the plain name."""
    key_class = getattr(web, "RequestKey", None)
    return key_class(name, kind) if key_class is not None else name


#: where a request's client and its body bytes held are kept on the request
CLIENT_KEY = request_key("syngrpo_client", str)
_HELD_KEY = request_key("syngrpo_body_held", int)


def client_of(request: web.BaseRequest) -> str:
    """The client a request counts against: its peer's IPv4 address or IPv6 /64 (``local``: a Unix socket)."""
    remote = request.remote
    if not remote:
        return "local"
    try:
        addr = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


@dataclass
class BodyBudget:
    """Decoded bytes of request bodies held now, in all and per client (one event loop: no lock needed)."""

    capacity: int
    per_client: int
    used: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # 503 busy: every client together at the cap
    refused_client: int = 0  # 429 client_busy: one client at its share

    def admit(self, client: str, announced: int | None) -> None:
        """Refuse at once (before a byte is read) a body that cannot fit what is held now."""
        need = announced or 1
        self._check(client, need)

    def take(self, client: str, n: int) -> None:
        """Count ``n`` more arrived bytes of ``client``'s body, or refuse (:class:`ApiError`)."""
        self._check(client, n)
        self.used += n
        self.by_client[client] = self.by_client.get(client, 0) + n

    def give(self, client: str, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        left = self.by_client.get(client, 0) - n
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)

    def _check(self, client: str, n: int) -> None:
        mine = self.by_client.get(client, 0)
        if mine and mine + n > self.per_client:
            self.refused_client += 1
            raise ApiError(429, "client_busy",
                           f"this client ({client}) is sending {mine} bytes of request bodies at once; its share is "
                           f"{self.per_client} (client_body_bytes_in_flight); send fewer at a time or retry in a "
                           "second", headers={"Retry-After": "1"})
        if self.used and self.used + n > self.capacity:
            self.refused += 1
            raise ApiError(503, "busy", f"the server is reading {self.used} bytes of request bodies (the cap is "
                           f"{self.capacity}); retry in a second", headers={"Retry-After": "1"})


class _Gate:
    __slots__ = ("count", "sem")

    def __init__(self, at_once: int) -> None:
        self.sem = asyncio.Semaphore(at_once)
        self.count = 0  # requests of this client handled or waiting now


class RequestShare:
    """At most ``at_once`` requests of one client handled at once; ``waiting`` more wait their turn."""

    def __init__(self, at_once: int, waiting: int) -> None:
        self.at_once = at_once
        self.waiting = waiting
        self._gates: dict[str, _Gate] = {}
        self.refused = 0

    def waiting_now(self) -> int:
        return sum(max(0, g.count - self.at_once) for g in self._gates.values())

    @contextlib.asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        gate = self._gates.get(client)
        if gate is None:
            gate = self._gates[client] = _Gate(self.at_once)
        if gate.count >= self.at_once + self.waiting:
            self.refused += 1
            raise ApiError(429, "client_busy", f"this client ({client}) has {gate.count} requests in progress or "
                           f"waiting; the server handles {self.at_once} of one client at once (client_concurrency) "
                           f"and keeps {self.waiting} waiting (client_waiting); retry in a second",
                           headers={"Retry-After": "1"})
        gate.count += 1
        try:
            async with gate.sem:
                yield
        finally:
            gate.count -= 1
            if gate.count == 0:
                self._gates.pop(client, None)


class BodyWork:
    """CPU work on request bodies (inflating, parsing large ones) off the event loop, in turns between clients.

    ``threads`` threads do it; each client has at most one piece of work there at a time (the next waits for
    it, first come first served), so one client cannot take every thread, and a piece waits for at most one
    piece of each other client.  The event loop only hands chunks over and gets results back.
    """

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.pieces = 0  # pieces of work done (for tests and /metrics readers)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="syngrpo-body")
        return self._pool

    async def run(self, client: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a body thread, after ``client``'s previous piece of work."""
        turn = self._turns.get(client)
        if turn is None:
            turn = self._turns[client] = (asyncio.Lock(), [0])
        lock, users = turn
        users[0] += 1
        try:
            async with lock:
                self.pieces += 1
                return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._turns.pop(client, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class _BadStream(Exception):
    """A body that is not the compressed stream its ``Content-Encoding`` says."""


class Inflater:
    """Inflates a ``gzip`` or ``deflate`` body chunk by chunk into a buffer, never past ``max_bytes``.

    Its methods run in a :class:`BodyWork` thread (zlib lets go of the interpreter lock while it works).
    ``deflate`` is taken with or without its zlib header (clients send both), as aiohttp took it.
    """

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self.encoding = encoding
        self.max_bytes = max_bytes
        self._d: Any = None

    def feed(self, body: bytearray, data: bytes) -> int:
        """Inflate ``data`` onto ``body``; returns the bytes added (``max_bytes`` + 1 in all means too large)."""
        if not data:
            return 0
        if self._d is None:
            if self.encoding == "gzip":
                wbits = 16 + zlib.MAX_WBITS
            else:  # a zlib header says its method in the low four bits of its first byte (8: deflate)
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._d = zlib.decompressobj(wbits)
        if self._d.eof:
            return 0  # after the end of the stream: ignored, as aiohttp ignored it
        try:
            out = self._d.decompress(data, self.max_bytes - len(body) + 1)
        except zlib.error as exc:
            raise _BadStream(str(exc)) from None
        body += out
        return len(out)

    def finish(self, body: bytearray) -> int:
        """The end of the body: a stream cut short is refused."""
        if self._d is None:
            return 0  # an empty body
        if self._d.eof:
            return 0
        try:
            out = self._d.flush()
        except zlib.error as exc:  # pragma: no cover - flush of a valid prefix does not raise
            raise _BadStream(str(exc)) from None
        body += out
        if not self._d.eof:
            raise _BadStream("the stream ends before its end")
        return len(out)


def check_encoding(request: web.BaseRequest) -> str:
    """The body's ``Content-Encoding`` (``identity`` when none); 415 for one the server does not inflate."""
    raw = request.headers.get("Content-Encoding", "").strip().lower()
    enc = raw or "identity"
    if enc not in ACCEPTED_ENCODINGS:
        raise ApiError(415, "unsupported_encoding",
                       f"Content-Encoding {raw[:40]!r} is not accepted; send {', '.join(ACCEPTED_ENCODINGS)}")
    return enc


def begin_body(request: web.Request, budget: BodyBudget, max_bytes: int) -> str:
    """Admission of a request with a body: its client, its encoding, the early refusals; returns the client."""
    client = client_of(request)
    request[CLIENT_KEY] = client
    request[_HELD_KEY] = 0
    check_encoding(request)
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        raise ApiError(413, "request_too_large", f"the request body is {announced} bytes; the limit is {max_bytes}")
    if request.body_exists:
        budget.admit(client, announced)
    return client


def end_body(request: web.Request, budget: BodyBudget) -> int:
    """Give back what the request's body held; returns how many bytes that was."""
    held = int(request.get(_HELD_KEY, 0))
    if held:
        budget.give(request[CLIENT_KEY], held)
        request[_HELD_KEY] = 0
    return held


async def read_body(request: web.Request, budget: BodyBudget, *, max_bytes: int, timeout_s: float,
                    work: BodyWork | None = None) -> bytearray:
    """The decoded body, counted against the budget as it arrives (held until :func:`end_body`).

    With ``work`` (the server's :class:`BodyWork`; its app is made with ``auto_decompress=False``, as
    :func:`~syngrpo.synthesis.server.app.create_app` makes it), a ``gzip`` or ``deflate`` body is inflated
    here, in ``work``'s threads, in the client's turn; without it, aiohttp's parser inflated it already.
    Refusals: ``413`` past ``max_bytes`` decoded (a compressed body included), ``408`` when the whole
    body has not arrived within ``timeout_s`` (not counting the time its pieces waited for and spent in
    ``work``'s threads), ``400 bad_encoding`` for a body that is not the
    ``gzip``/``deflate`` stream it says it is, ``429``/``503`` from the budget.
    """
    client = request.get(CLIENT_KEY) or client_of(request)
    request.setdefault(CLIENT_KEY, client)
    request.setdefault(_HELD_KEY, 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body = bytearray()
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    inflater = None
    if work is not None and enc in ("gzip", "deflate"):
        inflater = Inflater(enc, max_bytes)

    def too_large() -> ApiError:
        how = f" once inflated ({enc})" if enc and enc != "identity" else ""
        return ApiError(413, "request_too_large",
                        f"the request body is more than {max_bytes} bytes{how}; the limit is {max_bytes}")

    def count(n: int) -> None:
        if len(body) > max_bytes:
            raise too_large()
        budget.take(client, n)
        request[_HELD_KEY] += n

    async def inflate(fn: Callable[..., int], *args: Any) -> int:
        # the wait for a turn in the body threads and the inflating are the server's time, not the client's:
        # the deadline bounds how long the body takes to arrive, so it moves on by that much
        nonlocal deadline
        assert work is not None
        started = loop.time()
        try:
            return int(await work.run(client, fn, *args))
        finally:
            deadline += loop.time() - started

    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(request.content.readany(), left)
            if not chunk:
                if inflater is not None:
                    count(await inflate(inflater.finish, body))
                break
            if inflater is not None:
                count(await inflate(inflater.feed, body, chunk))
                continue
            if len(body) + len(chunk) > max_bytes:
                raise too_large()
            budget.take(client, len(chunk))
            request[_HELD_KEY] += len(chunk)
            body += chunk
    except _BadStream:
        raise ApiError(400, "bad_encoding", f"the request body is not a valid {enc} stream (Content-Encoding: "
                       f"{enc}); send it compressed whole, or without Content-Encoding", close=True) from None
    except asyncio.TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s "
                       "(body_timeout_s)", close=True) from None
    except RuntimeError as exc:  # aiohttp: the connection was gone before this read began waiting
        if "connection closed" not in str(exc).lower():
            raise
        raise ConnectionResetError("the client closed the connection during its request body") from None
    except (ContentEncodingError, RequestPayloadError) as exc:
        # aiohttp's parser hands a body it cannot decode to the handler as RequestPayloadError (an inflate
        # error, a malformed chunk): a 4xx of the client's making, where it used to be a 500 and a traceback
        text = " ".join(str(exc).split())
        if isinstance(exc, ContentEncodingError) or "content-encoding" in text.lower():
            raise ApiError(400, "bad_encoding", f"the request body is not a valid {enc} stream (Content-Encoding: "
                           f"{enc}); send it compressed whole, or without Content-Encoding", close=True) from None
        raise ApiError(400, "bad_body", f"the request body could not be read: {text}", close=True) from None
    return body  # not copied into bytes: the parsers take a bytearray, and a copy would double the peak
