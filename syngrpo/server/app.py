"""The data server's HTTP API: ``create_app(config)`` returns the aiohttp application.

Routes (all JSON unless said otherwise; docs/data-server.md has request/response examples)::

    POST /v1/jobs                    submit (idempotent by the client's ``key``) → 201 new, 200 existing
    GET  /v1/jobs                    list: ?state=queued,running&ids=a,b&key=K&after=SEQ&limit=N
    GET  /v1/jobs/{id}               one job's state
    GET  /v1/jobs/{id}/result        done job: new image (base64 PNG) with its boxes and labels
    GET  /v1/jobs/{id}/result.png    done job: the new image (image/png)
    GET  /v1/jobs/{id}/mask.png      done job: the kept-foreground mask (image/png)
    GET  /v1/jobs/{id}/input.png     the submitted image as stored (image/png)
    POST /v1/jobs/{id}/cancel        cancel a queued or running job
    GET  /healthz                    liveness and worker states (no token needed)
    GET  /metrics                    Prometheus text

Handlers are thin: validation lives in :mod:`syngrpo.server.validation`, the queue and the
workers in :mod:`syngrpo.server.workers`.  Every refusal, including aiohttp's own (unknown
route, wrong method, body too large), is ``{"error": {"code", "message"}}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from syngrpo import __version__
from syngrpo.plugins import Registry
from syngrpo.server.config import ServerConfig
from syngrpo.server.validation import ApiError, check_job_id, check_key, parse_submission
from syngrpo.server.workers import JobService

log = logging.getLogger("syngrpo.server")

SERVICE: web.AppKey[JobService] = web.AppKey("syngrpo_service", JobService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}
_OPEN_PATHS = frozenset({"/healthz"})


def error_response(err: ApiError) -> web.Response:
    return web.json_response(err.to_json(), status=err.status, headers=err.headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into the stable JSON error shape; never let an exception kill the server."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
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


def bearer_auth(token: str | None) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in _OPEN_PATHS:
            got = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(got, expected):
                raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                               headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return auth


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse an announced oversized body before reading a byte of it."""
    limit = request.app[SERVICE].config.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request_too_large",
                       f"the request body is {request.content_length} bytes; the limit is {limit}")
    return await handler(request)


# ---------------------------------------------------------------------------- handlers


async def submit_job(request: web.Request) -> web.Response:
    ctype = request.content_type
    if request.body_exists and ctype not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, "unsupported_media_type", f"send application/json, not {ctype}")
    raw = await request.read()
    body = parse_submission(raw)
    rec, created = await request.app[SERVICE].submit(body)
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


async def list_jobs(request: web.Request) -> web.Response:
    from syngrpo.server.store import STATES

    service = request.app[SERVICE]
    states = [s for s in request.query.get("state", "").split(",") if s]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise ApiError(400, "invalid_query", f"unknown state {bad[0]!r}; states are {', '.join(STATES)}")
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    if len(ids) > 500:
        raise ApiError(400, "invalid_query", "at most 500 ids per request")
    for i in ids:
        check_job_id(i)
    key = request.query.get("key")
    if key is not None:
        check_key(key)
    limit = _int_param(request, "limit", 100, 1, 500)
    after = _int_param(request, "after", 0, 0, 2**62)
    jobs = service.store.list(states=states, ids=ids, key=key, after=after, limit=limit)
    nxt = jobs[-1].seq if len(jobs) == limit else None
    return web.json_response({"jobs": [j.to_json() for j in jobs], "next_after": nxt})


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
        "image": base64.b64encode(path.read_bytes()).decode("ascii"),
    }
    return web.json_response(payload)


def _png_handler(which: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.app[SERVICE].result_path(_job_id(request), which)
        return web.FileResponse(path, headers={"Content-Type": "image/png"})

    return handler


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].cancel(_job_id(request)).to_json())


async def healthz(request: web.Request) -> web.Response:
    health = request.app[SERVICE].health()
    health["version"] = __version__
    return web.json_response(health, status=200 if health["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SERVICE].metrics_text(), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


# ---------------------------------------------------------------------------- factory


def create_app(config: ServerConfig | None = None, *, registry: Registry | None = None) -> web.Application:
    """The data server as an aiohttp application (workers start with the app, stop with it).

    ``registry`` replaces the installed plugins (tests register faulty synthesizers this way).
    Binding is the caller's business: :func:`syngrpo.server.runner.serve` checks that a
    non-loopback address has a token.
    """
    config = config or ServerConfig()
    service = JobService(config, registry)
    app = web.Application(client_max_size=config.max_request_bytes,
                          middlewares=[errors_as_json, bearer_auth(config.token), body_limit])
    app[SERVICE] = service

    async def on_startup(app: web.Application) -> None:
        await service.start()

    async def on_cleanup(app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/result", get_result)
    app.router.add_get("/v1/jobs/{job_id}/result.png", _png_handler("result"))
    app.router.add_get("/v1/jobs/{job_id}/mask.png", _png_handler("mask"))
    app.router.add_get("/v1/jobs/{job_id}/input.png", _png_handler("input"))
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel_job)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
