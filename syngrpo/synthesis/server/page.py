"""The data server's live page (``GET /``): what the server is doing, for a person watching a run.

Queue depth, jobs per second, why jobs failed, each worker's state, and the last originals beside the
images made from them (boxes drawn, the description used), refreshed every second without reloading.
Plain HTML, CSS and JavaScript served from this package (``static/``): no build step, nothing fetched
from another host (the page's Content-Security-Policy allows its own origin only).

Why the page keeps copies of the last pairs (:class:`PageFeed`): a trainer deletes every job it has
collected within a poll interval (``synthesis.delete_collected``), so by the time a person looks, the
store no longer holds the images.  The feed listens to the job service and keeps small thumbnails of
the last ``PAIRS_KEPT`` done jobs, a moving count of finished jobs for the rate, and the failure
reasons since the server started, grouped (a label check's numbers differ from job to job).

Auth: the HTML and its two assets hold no data and are served without a token, so that a browser can
open them; everything with data (``GET /v1/overview`` and the thumbnails) is behind the server's
token like every other route.  The page reads the token from the link's fragment (``/#token=...``,
never sent to the server or kept in its logs) or asks for it, keeps it for the browser tab
(``sessionStorage``) and sends it as ``Authorization: Bearer``; images are fetched with it too and
shown from blob URLs.  Labels and descriptions are written as text, never as HTML.

A finished run's store opens read-only (``syngrpo serve --read-only --data-dir DIR``,
:mod:`.readonly`): the same page over the rows the store kept, nothing written, no worker started.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections import Counter, deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from PIL import Image

from syngrpo import __version__
from syngrpo.synthesis.server.records import JobRecord
from syngrpo.synthesis.server.validation import ApiError, check_job_id

log = logging.getLogger("syngrpo.synthesis.server")

#: done jobs whose original and result the page shows
PAIRS_KEPT = 8
#: longer side of the thumbnails the page shows (bytes kept in memory: ~2 x 8 small PNGs)
THUMB_PX = 320
#: seconds over which the page's jobs-per-second is counted
RATE_WINDOW_S = 60.0
#: failure reasons listed (the most frequent first)
REASONS_SHOWN = 10

ASSETS = {"/": ("index.html", "text/html"), "/page/page.js": ("page.js", "application/javascript"),
          "/page/page.css": ("page.css", "text/css")}
#: paths served without a token: the page's HTML and assets, which hold no data
OPEN_PATHS = frozenset(ASSETS)
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
}
_NUMBER = re.compile(r"\d+(\.\d+)?")
_EXC_TYPE = re.compile(r"[A-Z]\w*(Error|Exception|Exceeded|Timeout|Interrupt)\w*")


def failure_reason(error: str | None) -> str:
    """A failure's group: its first clause (and the exception type after it), numbers as ``N``.

    ``synthesis failed: OutOfMemoryError: CUDA out of memory ...`` -> ``synthesis failed: OutOfMemoryError``;
    ``label check failed: box 0 (1.0, ...) keeps 3% ...`` -> ``label check failed``.
    """
    parts = [p.strip() for p in (error or "unknown").split(":")]
    head = parts[0]
    if len(parts) > 1 and _EXC_TYPE.fullmatch(parts[1]):
        head += f": {parts[1]}"
    return _NUMBER.sub("N", head)[:120]


def thumbnail_png(data: bytes, px: int = THUMB_PX) -> tuple[bytes, int, int]:
    """A PNG of the image at most ``px`` on its longer side, and the original's width and height."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        image = im.convert("RGB")
    image.thumbnail((px, px))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), width, height


@dataclass
class Pair:
    """A done job as the page shows it: its request and thumbnails of its input and result."""

    record: dict[str, Any]
    input_png: bytes
    result_png: bytes


def pair_json(job: dict[str, Any]) -> dict[str, Any]:
    base = f"/v1/overview/pairs/{job['id']}"
    return {k: job.get(k) for k in ("id", "key", "description", "boxes", "labels", "width", "height", "finished_at",
                                    "seconds", "worker")} | {"input": f"{base}/input.png",
                                                             "result": f"{base}/result.png"}


def job_totals(store: Any) -> dict[str, int]:
    """The job counts ``/metrics`` reports: rows kept by state plus the totals of deleted jobs."""
    counts = store.count_by_state()
    gone = store.counters()
    return {"queued": counts["queued"], "running": counts["running"],
            "done_total": counts["done"] + gone.get("deleted_done", 0),
            "failed_total": counts["failed"] + gone.get("deleted_failed", 0),
            "cancelled_total": counts["cancelled"] + gone.get("deleted_cancelled", 0),
            "kept": sum(counts.values())}


class PageFeed:
    """What the live page needs that the store forgets: recent finishes, failure reasons, the last pairs."""

    #: answers from memory, on the loop (a :class:`~.readonly.StoreView` reads a database: in a thread)
    blocking = False

    def __init__(self, service: Any, pairs: int = PAIRS_KEPT) -> None:
        self.service = service
        self.finishes: deque[float] = deque(maxlen=100_000)
        self.reasons: Counter[str] = Counter()
        self.examples: dict[str, tuple[str, float]] = {}
        self.pairs: deque[Pair] = deque(maxlen=pairs)
        self._tasks: set[asyncio.Task[None]] = set()
        service.add_listener(self.on_final)

    def on_final(self, rec: JobRecord) -> None:
        """A job reached a final state (called on the service's loop; file reads go to a thread)."""
        now = time.time()
        if rec.state == "done":
            self.finishes.append(now)
            task = asyncio.get_running_loop().create_task(self._capture(rec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif rec.state == "failed":
            reason = failure_reason(rec.error)
            self.reasons[reason] += 1
            self.examples[reason] = (rec.error or "", now)

    async def _capture(self, rec: JobRecord) -> None:
        store = self.service.store
        try:
            data = await asyncio.to_thread(lambda: (store.input_path(rec.id).read_bytes(),
                                                    store.result_path(rec.id).read_bytes()))
            (inp, width, height), (res, _, _) = await asyncio.to_thread(lambda: (thumbnail_png(data[0]),
                                                                                  thumbnail_png(data[1])))
        except (OSError, ValueError):  # collected and deleted already, or unreadable: nothing to show
            return
        record = rec.to_json() | {"worker": rec.worker, "width": width, "height": height}
        self.pairs.appendleft(Pair(record, inp, res))

    def rate(self) -> dict[str, Any]:
        now = time.time()
        window = min(RATE_WINDOW_S, max(1.0, now - self.service.started_at))
        n = sum(1 for t in self.finishes if t >= now - window)
        return {"jobs_per_s": n / window, "window_s": window, "done_in_window": n}

    def failures(self) -> list[dict[str, Any]]:
        return [{"reason": r, "count": n, "example": self.examples[r][0], "last_at": self.examples[r][1]}
                for r, n in self.reasons.most_common(REASONS_SHOWN)]

    def overview(self) -> dict[str, Any]:
        service = self.service
        health = service.health()
        totals = job_totals(service.store)
        return {
            "server": {"version": __version__, "backend": service.config.backend, "read_only": False,
                       "isolation": getattr(service, "isolation", None), "started_at": service.started_at,
                       "status": health["status"], "reason": health.get("reason")},
            "queue": {"depth": totals["queued"], "capacity": service.config.queue_size, "running": totals["running"]},
            "jobs": totals,
            "rate": self.rate(),
            "failures": self.failures(),
            "failures_since": "start",
            "workers": health["workers"],
            "recent": [pair_json(p.record) for p in self.pairs],
        }

    def pair_image(self, job_id: str, which: str) -> bytes | None:
        for p in self.pairs:
            if p.record["id"] == job_id:
                return p.input_png if which == "input" else p.result_png
        return None


# ---------------------------------------------------------------------------- routes

FEED: web.AppKey[Any] = web.AppKey("syngrpo_page_feed", object)


def _asset(name: str, content_type: str) -> web.Response:
    text = resources.files("syngrpo.synthesis.server").joinpath("static", name).read_text(encoding="utf-8")
    return web.Response(text=text, content_type=content_type, charset="utf-8", headers=_HEADERS)


def _asset_handler(name: str, content_type: str):
    async def handler(request: web.Request) -> web.Response:
        return _asset(name, content_type)

    return handler


async def get_overview(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    body = await asyncio.to_thread(feed.overview) if feed.blocking else feed.overview()
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def get_pair_image(request: web.Request) -> web.Response:
    job_id, which = request.match_info["job_id"], request.match_info["which"]
    check_job_id(job_id)
    feed = request.app[FEED]
    data = await asyncio.to_thread(feed.pair_image, job_id, which) if feed.blocking else feed.pair_image(job_id, which)
    if data is None:
        raise ApiError(404, "not_found", f"the page keeps no {which} image of job {job_id}")
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def add_page_routes(app: web.Application, feed: Any) -> None:
    """``GET /`` and its assets (no token), ``GET /v1/overview`` and the pairs' thumbnails (token)."""
    app[FEED] = feed
    for path, (name, ctype) in ASSETS.items():
        app.router.add_get(path, _asset_handler(name, ctype))
    app.router.add_get("/v1/overview", get_overview)
    app.router.add_get("/v1/overview/pairs/{job_id}/{which:input|result}.png", get_pair_image)
