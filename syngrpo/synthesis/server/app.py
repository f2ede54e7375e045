"""The data server's HTTP API: ``create_app(config)`` returns the aiohttp application.

Routes (all JSON unless said otherwise; docs/data-server.md has request/response examples)::

    POST /v1/jobs                    submit (idempotent by the client's ``key``) → 201 new, 200 existing
    GET  /v1/jobs                    list: ?state=queued,running&ids=a,b&key=K&after=SEQ&limit=N
    POST /v1/jobs/query              the same list with a JSON body (up to 500 ids, beyond a URL's length)
    GET  /v1/jobs/{id}               one job's state
    GET  /v1/jobs/{id}/result        done job: new image (base64 PNG) with its boxes and labels
    GET  /v1/jobs/{id}/result.png    done job: the new image (image/png)
    GET  /v1/jobs/{id}/mask.png      done job: the kept-foreground mask (image/png)
    GET  /v1/jobs/{id}/input.png     the submitted image as stored (image/png)
    POST /v1/jobs/{id}/cancel        cancel a queued or running job (and delete it: row and files)
    DELETE /v1/jobs/{id}             delete a job, row and files (a running one is cancelled first) → 200 / 202
    POST /v1/jobs/delete             delete many: {"ids": [...], "keys": [...]} (up to 500 in all)
    GET  /healthz                    up or down without the token; worker states and reasons with it
    GET  /metrics                    Prometheus text
    GET  /                           the live page (HTML and its assets need no token; its data does:
                                     GET /v1/overview and the thumbnails of the last pairs, see :mod:`.page`)

Handlers are thin: validation lives in :mod:`syngrpo.synthesis.server.validation`, the queue in
:mod:`syngrpo.synthesis.server.workers`, the workers in :mod:`syngrpo.synthesis.server.device_worker`.  Every refusal, including aiohttp's own (unknown
route, wrong method, body too large, a request its HTTP parser refused), is
``{"error": {"code", "message"}}`` with a 4xx status.

Limits that protect the server from its clients (docs/data-server.md, "Limits and failure
behaviour") live where they act: who a client is and the bytes of bodies it may hold in
:mod:`.admission` (bodies counted decoded, as they arrive; ``body_timeout_s``), what a job may hold
in :mod:`.validation`, the queue share and the fair choice of the next job in :mod:`.workers` and
:mod:`.fairness`, connections in :mod:`.connections`.  A list answer stops at ``max_list_bytes``
(its ``next_after`` gives the rest).  The disk is bounded by deletion (clients delete what they
collected; cancelling deletes; retention deletes the rest) and by a budget checked at submission
(429 ``store_full`` / ``disk_low``; :meth:`~syngrpo.synthesis.server.workers.JobService.disk_refusal`).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from syngrpo import __version__
from syngrpo.plugins import Registry
from syngrpo.synthesis.server.admission import (
    CLIENT_KEY,
    BodyBudget,
    BodyWork,
    RequestShare,
    begin_body,
    client_of,
    end_body,
    read_body,
    request_key,
)
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.connections import CONNECTIONS, ConnectionGuard
from syngrpo.synthesis.server.metrics import connection_metrics_text
from syngrpo.synthesis.server.page import OPEN_PATHS as PAGE_PATHS
from syngrpo.synthesis.server.page import PageFeed, add_page_routes
from syngrpo.synthesis.server.records import STATES
from syngrpo.synthesis.server.validation import (
    ApiError,
    SubmissionBody,
    check_bounds,
    check_job_id,
    check_key,
    parse_submission,
)
from syngrpo.synthesis.server.workers import JobService

#: ids one list request may name
MAX_LIST_IDS = 500

log = logging.getLogger("syngrpo.synthesis.server")

SERVICE: web.AppKey[JobService] = web.AppKey("syngrpo_service", JobService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 410: "deleted", 413: "request_too_large",
                 414: "uri_too_long", 415: "unsupported_media_type", 431: "headers_too_large"}
_OPEN_PATHS = frozenset({"/healthz"}) | PAGE_PATHS


def error_response(err: ApiError) -> web.Response:
    resp = web.json_response(err.to_json(), status=err.status, headers=err.headers)
    if err.close:
        resp.force_close()  # the rest of a stalled or undecodable body is not worth reading (aiohttp would linger)
    return resp


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into the stable JSON error shape; never let an exception kill the server."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except ConnectionError as exc:  # the client went away mid-request: its business, not an error of ours
        log.debug("client disconnected during %s %s: %s", request.method, request.path, exc)
        return web.Response(status=499)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = f"the request body is larger than {request.app[SERVICE].config.max_request_bytes} bytes"
        elif exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return web.json_response({"error": {"code": code, "message": message}}, status=exc.status, headers=headers)
    except Exception:  # noqa: BLE001 - logged; the client gets a 500 and the server goes on
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": {"code": "internal_error", "message": "internal server error"}},
                                 status=500)


def _token_matches(request: web.BaseRequest, expected: bytes) -> bool:
    """Whether the request carries the bearer token (constant time).

    aiohttp decodes header bytes that are not UTF-8 into lone surrogates; encoding them back with
    ``surrogateescape`` compares the bytes the client sent, where a plain ``encode()`` raised and
    answered 500 (issue 24, item 4).
    """
    got = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(got, expected)


def bearer_auth(token: str | None) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            request[_AUTHORIZED] = _token_matches(request, expected)
            if request.path not in _OPEN_PATHS and not request[_AUTHORIZED]:
                raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                               headers={"WWW-Authenticate": "Bearer"})
        else:
            request[_AUTHORIZED] = True
        return await handler(request)

    return auth


#: whether a request carried the token (or the server has none): ``/healthz`` says more to those that do
_AUTHORIZED = request_key("syngrpo_authorized", bool)


BODIES: web.AppKey[BodyBudget] = web.AppKey("syngrpo_bodies", BodyBudget)
#: inflating and parsing large bodies, off the event loop, one piece of each client's at a time
WORK: web.AppKey[BodyWork] = web.AppKey("syngrpo_body_work", BodyWork)
SHARES: web.AppKey[RequestShare] = web.AppKey("syngrpo_request_shares", RequestShare)


@web.middleware
async def client_turns(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each client's requests take turns (:class:`~.admission.RequestShare`); ``/healthz`` never waits."""
    if request.path in _OPEN_PATHS:
        return await handler(request)
    client = client_of(request)
    request[CLIENT_KEY] = client
    async with request.app[SHARES].turn(client):
        return await handler(request)

#: after a body this large, once no other body is in flight, freed heap goes back to the OS
_TRIM_AFTER_BYTES = 4 * 1024 * 1024


def _release_freed_memory() -> None:
    """glibc keeps freed heap for reuse; hand it back so a burst of large jobs does not pin the RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a body that cannot be taken before reading a byte of it; give back what it held after
    (:mod:`.admission`: bodies are counted decoded, per client and in all, as they arrive)."""
    cfg = request.app[SERVICE].config
    budget = request.app[BODIES]
    if not request.body_exists:
        request.setdefault(CLIENT_KEY, client_of(request))
        return await handler(request)
    begin_body(request, budget, cfg.max_request_bytes)
    try:
        return await handler(request)
    finally:
        held = end_body(request, budget)
        if held >= _TRIM_AFTER_BYTES and budget.used == 0:
            _release_freed_memory()


async def read_json_body(request: web.Request) -> bytearray:
    """The request's decoded body (:func:`.admission.read_body` under this server's limits)."""
    cfg = request.app[SERVICE].config
    return await read_body(request, request.app[BODIES], max_bytes=cfg.max_request_bytes,
                           timeout_s=cfg.body_timeout_s, work=request.app[WORK])


# ---------------------------------------------------------------------------- handlers


#: bodies larger than this are parsed in a body thread, in the client's turn (a 30 MB JSON text takes the
#: loop ~0.3 s; a 7 MB one held the loop, or the interpreter lock, ~7 ms, so the whole of it matters)
_PARSE_IN_THREAD_BYTES = 64 * 1024


def _parse_checked(raw: bytes | bytearray, config: ServerConfig) -> SubmissionBody:
    """Parse a submission and check every bound that needs no image (before anything copies or hashes it)."""
    body = parse_submission(raw)
    check_bounds(body, config)
    return body


async def submit_job(request: web.Request) -> web.Response:
    ctype = request.content_type
    if request.body_exists and ctype not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, "unsupported_media_type", f"send application/json, not {ctype}")
    raw = await read_json_body(request)
    service = request.app[SERVICE]
    if len(raw) > _PARSE_IN_THREAD_BYTES:  # a large body is parsed off the loop: others' requests go on
        body = await request.app[WORK].run(request[CLIENT_KEY], _parse_checked, raw, service.config)
    else:
        body = _parse_checked(raw, service.config)
    del raw  # parsed: the text is not needed while the image is checked
    rec, created = await service.submit(body, client=request[CLIENT_KEY])
    status = 201 if created else 200
    return web.json_response(rec.to_json(), status=status, headers={"Location": f"/v1/jobs/{rec.id}"})


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_query", f"{name} must be between {lo} and {hi}")
    return value


def _list(request: web.Request, states: list[str], ids: list[str], key: str | None, after: int,
          limit: int) -> web.Response:
    service = request.app[SERVICE]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise ApiError(400, "invalid_query", f"unknown state {bad[0]!r}; states are {', '.join(STATES)}")
    if len(ids) > MAX_LIST_IDS:
        raise ApiError(400, "invalid_query", f"at most {MAX_LIST_IDS} ids per request (got {len(ids)})")
    for i in ids:
        check_job_id(i)
    if key is not None:
        check_key(key)
    jobs = service.store.list(states=states, ids=ids, key=key, after=after, limit=limit)
    # The page stops at max_list_bytes (at least one job): a client asking for 500 large jobs gets
    # them a page at a time through ``next_after`` instead of one answer of any size.
    parts: list[str] = []
    size, cut = 0, False
    for job in jobs:
        text = json.dumps(job.to_json(), separators=(",", ":"))
        if parts and size + len(text) > service.config.max_list_bytes:
            cut = True
            break
        parts.append(text)
        size += len(text) + 1
    shown = jobs[:len(parts)]
    nxt = shown[-1].seq if shown and (cut or len(jobs) == limit) else None
    deleted = []
    if ids:  # ids that name deleted jobs say so (a job cancelled or deleted since), instead of vanishing
        found = {j.id for j in jobs}
        for i in dict.fromkeys(ids):
            tomb = service.store.tombstone(i) if i not in found else None
            if tomb is not None:
                deleted.append(tomb.to_json())
    text = ('{"jobs":[' + ",".join(parts) + '],"next_after":' + json.dumps(nxt) + ',"deleted":'
            + json.dumps(deleted, separators=(",", ":")) + "}")
    return web.Response(text=text, content_type="application/json")


async def list_jobs(request: web.Request) -> web.Response:
    states = [s for s in request.query.get("state", "").split(",") if s]
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    limit = _int_param(request, "limit", 100, 1, 500)
    after = _int_param(request, "after", 0, 0, 2**62)
    return _list(request, states, ids, request.query.get("key"), after, limit)


async def query_jobs(request: web.Request) -> web.Response:
    """``POST /v1/jobs/query``: the list with a JSON body, for id lists too long for a URL."""
    body = await _json_body(request)
    unknown = sorted(set(body) - {"state", "ids", "key", "after", "limit"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {unknown}; fields: state, ids, key, after, limit")
    states, ids, key = body.get("state", []), body.get("ids", []), body.get("key")
    after, limit = body.get("after", 0), body.get("limit", 100)
    if not (isinstance(states, list) and all(isinstance(x, str) for x in states)):
        raise ApiError(422, "invalid_request", "state must be a list of state names")
    if not (isinstance(ids, list) and all(isinstance(x, str) for x in ids)):
        raise ApiError(422, "invalid_request", "ids must be a list of job ids")
    if key is not None and not isinstance(key, str):
        raise ApiError(422, "invalid_request", "key must be a string")
    for name, value, hi in (("after", after, 2**62), ("limit", limit, 500)):
        lo = 1 if name == "limit" else 0
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ApiError(422, "invalid_request", f"{name} must be an integer between {lo} and {hi}")
    return _list(request, states, ids, key, after, limit)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """A JSON object body (:func:`_json_object`); a large one is parsed in a body thread, in the client's turn."""
    raw = await read_json_body(request)
    if len(raw) > _PARSE_IN_THREAD_BYTES:
        return await request.app[WORK].run(request[CLIENT_KEY], _json_object, raw)
    return _json_object(raw)


def _json_object(raw: bytes | bytearray) -> dict[str, Any]:
    """A small JSON object body (a query, a deletion): 400 for text that is not JSON, nested past what
    the parser can follow (a ``RecursionError`` was a 500), or not UTF-8; 422 for a non-object."""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {why}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the request body must be a JSON object")
    return body


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    check_job_id(job_id)
    return job_id


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].get(_job_id(request)).to_json())


async def get_result(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    job_id = _job_id(request)
    path = service.result_path(job_id)
    rec = service.get(job_id)
    payload: dict[str, Any] = {
        "id": rec.id, "key": rec.key, "state": rec.state, "width": rec.width, "height": rec.height,
        "boxes": rec.boxes, "labels": rec.labels, "description": rec.description, "seconds": rec.seconds,
        "image": base64.b64encode(_read_job_file(service, job_id, path)).decode("ascii"),
    }
    return web.json_response(payload)


def _read_job_file(service: JobService, job_id: str, path: Any) -> bytes:
    """A job file's bytes; a job deleted between its lookup and this read answers as deleted (410), not 500."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        service.get(job_id)  # raises 410 deleted (or 404)
        raise ApiError(410, "gone", f"the file of job {job_id} is missing on the server") from None


def _png_handler(which: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.app[SERVICE].result_path(_job_id(request), which)
        return web.FileResponse(path, headers={"Content-Type": "image/png"})

    return handler


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a job and free it: a queued one is deleted at once, a running one when its call returns."""
    return web.json_response((await request.app[SERVICE].cancel(_job_id(request))).to_json())


async def delete_job(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs/{id}``: 200 with the tombstone (again on a repeat), 202 for a running job, 404 unknown."""
    service = request.app[SERVICE]
    job_id = _job_id(request)
    outcome = await service.delete([job_id])
    if outcome.deleting:
        return web.json_response(outcome.deleting[0].to_json(), status=202)
    if outcome.missing:
        raise ApiError(404, "not_found", f"no job {job_id}")
    tomb = service.store.tombstone(job_id)
    if tomb is None:  # pragma: no cover - a tombstone cannot vanish in between (the sweep runs on this loop)
        raise ApiError(404, "not_found", f"no job {job_id}")
    return web.json_response(tomb.to_json())


async def delete_jobs(request: web.Request) -> web.Response:
    """``POST /v1/jobs/delete``: many jobs by id or key in one request (what the trainer's transport sends)."""
    body = await _json_body(request)
    unknown = sorted(set(body) - {"ids", "keys"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {unknown}; fields: ids, keys")
    ids, keys = body.get("ids", []), body.get("keys", [])
    for name, value in (("ids", ids), ("keys", keys)):
        if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise ApiError(422, "invalid_request", f"{name} must be a list of strings")
    if len(ids) + len(keys) > MAX_LIST_IDS:
        raise ApiError(422, "invalid_request", f"at most {MAX_LIST_IDS} ids and keys per request "
                       f"(got {len(ids) + len(keys)})")
    for i in ids:
        check_job_id(i)
    for k in keys:
        check_key(k)
    service = request.app[SERVICE]
    wanted = list(ids)
    not_found: list[str] = []
    for k in keys:
        rec = service.store.get_by_key(k)
        tomb = service.store.tombstone_by_key(k) if rec is None else None
        if rec is not None:
            wanted.append(rec.id)
        elif tomb is not None:
            wanted.append(tomb.id)
        else:
            not_found.append(k)
    outcome = await service.delete(wanted)
    return web.json_response({
        "deleted": [r.id for r in outcome.deleted] + [t.id for t in outcome.already],
        "deleting": [r.id for r in outcome.deleting],
        "not_found": outcome.missing + not_found,
    })


async def healthz(request: web.Request) -> web.Response:
    """Up or down for anyone; worker states, errors and reasons only for a client with the token.

    Without the token the answer is ``{"status": ...}`` alone: the reasons name files, devices and
    exceptions, which are the operator's business (issue 24, item 9).
    """
    health = request.app[SERVICE].health()
    status = 503 if health["status"] == "broken" else 200
    if not request.get(_AUTHORIZED, True):
        return web.json_response({"status": health["status"]}, status=status)
    health["version"] = __version__
    return web.json_response(health, status=status)


async def metrics(request: web.Request) -> web.Response:
    text = request.app[SERVICE].metrics_text() + connection_metrics_text(
        request.app[BODIES], request.app[SHARES], request.app[CONNECTIONS])
    return web.Response(text=text, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"},
                        charset="utf-8")


# ---------------------------------------------------------------------------- factory


def create_app(config: ServerConfig | None = None, *, registry: Registry | None = None,
               service: JobService | None = None) -> web.Application:
    """The data server as an aiohttp application (workers start with the app, stop with it).

    ``registry`` replaces the installed plugins (tests register faulty synthesizers this way);
    ``service`` is a job service made elsewhere (the ``ray`` backend's, whose workers are replicas).
    Binding is the caller's business: :func:`syngrpo.synthesis.server.runner.serve` checks that a
    non-loopback address has a token.
    """
    if service is not None:
        config = service.config
    config = config or ServerConfig()
    service = service or JobService(config, registry)
    # auto_decompress off: gzip and deflate bodies are inflated by read_body, in a body thread (aiohttp's
    # parser inflated them on the event loop, where every other client's requests waited for it)
    app = web.Application(client_max_size=config.max_request_bytes,
                          middlewares=[errors_as_json, bearer_auth(config.token), client_turns, body_limit],
                          handler_args={"auto_decompress": False})
    app[SERVICE] = service
    app[BODIES] = BodyBudget(config.max_body_bytes_in_flight, config.client_body_budget())
    app[CONNECTIONS] = ConnectionGuard(config.max_connections)
    app[SHARES] = RequestShare(config.client_concurrency, config.client_waiting)
    app[WORK] = BodyWork()

    async def on_startup(app: web.Application) -> None:
        await service.start()

    async def on_cleanup(app: web.Application) -> None:
        await service.stop()
        app[WORK].close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_post("/v1/jobs/query", query_jobs)
    app.router.add_post("/v1/jobs/delete", delete_jobs)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/v1/jobs/{job_id}", delete_job)
    app.router.add_get("/v1/jobs/{job_id}/result", get_result)
    app.router.add_get("/v1/jobs/{job_id}/result.png", _png_handler("result"))
    app.router.add_get("/v1/jobs/{job_id}/mask.png", _png_handler("mask"))
    app.router.add_get("/v1/jobs/{job_id}/input.png", _png_handler("input"))
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel_job)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_page_routes(app, PageFeed(service))
    return app
