"""The page over a finished run's job store, read-only (``syngrpo serve --read-only --data-dir DIR``).

Its own module because it is the one place that opens a store without taking it: no lock, the
database opened read-only (``immutable`` when no server has it open, ``mode=ro`` beside one), no worker, nothing
written.  So it also works beside a live server on the same store.  What it
shows comes from the rows the store kept: a trainer that deleted the jobs it collected leaves their
totals (the ``counters`` table) but not their images or failure texts; a run with
``synthesis.delete_collected: false`` keeps everything.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from syngrpo import __version__
from syngrpo.errors import ConfigError
from syngrpo.synthesis.server.app import bearer_auth, errors_as_json
from syngrpo.synthesis.server.page import (
    PAIRS_KEPT,
    REASONS_SHOWN,
    add_page_routes,
    failure_reason,
    pair_json,
    thumbnail_png,
)


class StoreView:
    """A job store read without taking it: the page of a finished run (or beside a live server)."""

    blocking = True  # it reads the database and files: the page's handlers call it in a thread

    def __init__(self, data_dir: str | Path, pairs: int = PAIRS_KEPT) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "jobs.sqlite3"
        if not self.db_path.is_file():
            raise ConfigError(f"{self.data_dir} is not a data server's store (no jobs.sqlite3 in it); give "
                              "--data-dir the folder a server wrote (a run's server/ folder)")
        self.pairs = pairs

    def _db(self) -> sqlite3.Connection:
        """A read-only connection, opened per request.  A store without a write-ahead log (its server closed
        it) is read as immutable, which creates no file; one with a log (a server has it open, or died) is
        read through SQLite's shared-memory index, which it then has already."""
        wal = Path(f"{self.db_path}-wal").exists()
        mode = "mode=ro" if wal else "immutable=1"
        db = sqlite3.connect(f"file:{self.db_path}?{mode}", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def overview(self) -> dict[str, Any]:
        db = self._db()
        try:
            counts = {s: 0 for s in ("queued", "running", "done", "failed", "cancelled")}
            counts.update({r["state"]: r["n"] for r in db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")})
            gone = {r["name"]: int(r["value"]) for r in db.execute("SELECT name, value FROM counters")}
            span = db.execute("SELECT MIN(created_at), MAX(finished_at), COUNT(*) FROM jobs "
                              "WHERE state = 'done'").fetchone()
            reasons: Counter[str] = Counter()
            examples: dict[str, tuple[str, float]] = {}
            for r in db.execute("SELECT error, finished_at FROM jobs WHERE state = 'failed' ORDER BY finished_at"):
                reason = failure_reason(r["error"])
                reasons[reason] += 1
                examples[reason] = (r["error"] or "", r["finished_at"] or 0.0)
            rows = db.execute("SELECT id, key, request, width, height, finished_at, seconds, worker FROM jobs "
                              "WHERE state = 'done' ORDER BY finished_at DESC LIMIT ?", (self.pairs,)).fetchall()
        finally:
            db.close()
        totals = {"queued": counts["queued"], "running": counts["running"],
                  "done_total": counts["done"] + gone.get("deleted_done", 0),
                  "failed_total": counts["failed"] + gone.get("deleted_failed", 0),
                  "cancelled_total": counts["cancelled"] + gone.get("deleted_cancelled", 0),
                  "kept": sum(counts.values())}
        first, last, kept_done = span[0], span[1], span[2]
        seconds = (last - first) if first and last and last > first else None
        recent = []
        for r in rows:
            req = json.loads(r["request"])
            recent.append(pair_json({"id": r["id"], "key": r["key"], "description": req["description"],
                                     "boxes": req["boxes"], "labels": req["labels"], "width": r["width"],
                                     "height": r["height"], "finished_at": r["finished_at"],
                                     "seconds": r["seconds"], "worker": r["worker"]}))
        return {
            "server": {"version": __version__, "backend": None, "read_only": True, "store": str(self.data_dir),
                       "status": "read-only", "reason": None, "started_at": None},
            "queue": {"depth": totals["queued"], "capacity": None, "running": totals["running"]},
            "jobs": totals,
            # over the done jobs the store kept: a trainer that deleted what it collected leaves few
            "rate": {"jobs_per_s": (kept_done / seconds) if seconds else None, "window_s": seconds,
                     "done_in_window": kept_done},
            "failures": [{"reason": k, "count": n, "example": examples[k][0], "last_at": examples[k][1]}
                         for k, n in reasons.most_common(REASONS_SHOWN)],
            "failures_since": "kept",
            "workers": [],
            "recent": recent,
        }

    def pair_image(self, job_id: str, which: str) -> bytes | None:
        name = "input.png" if which == "input" else "result.png"
        try:
            return thumbnail_png((self.data_dir / "jobs" / job_id / name).read_bytes())[0]
        except (OSError, ValueError):
            return None


def create_readonly_app(data_dir: str | Path, token: str | None = None) -> web.Application:
    """The page over a store, read-only: ``/``, its assets, ``/v1/overview`` and the pairs' images."""
    view = StoreView(data_dir)
    app = web.Application(middlewares=[errors_as_json, bearer_auth(token)])
    add_page_routes(app, view)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "read-only", "store": str(view.data_dir), "version": __version__})

    app.router.add_get("/healthz", healthz)
    return app
