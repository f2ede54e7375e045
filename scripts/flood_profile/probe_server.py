"""``python -m syngrpo.synthesis.server`` with probes (started by run.py): every event-loop callback over
0.5 ms timed by name, a loop-lag probe (a 5 ms sleep's overshoot), the innocent client's (127.0.0.2)
handler times, per scenario (``GET /probe/phase?p=NAME``); written to ``$PROBE_OUT`` at shutdown."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import runpy
import sys
import time

from aiohttp import web

import syngrpo.synthesis.server.app as appmod

OUT = os.environ["PROBE_OUT"]
INNOCENT = "127.0.0.2"
stats: dict = {"cb": collections.defaultdict(lambda: [0, 0.0, 0.0]), "lag": [], "inn": [], "phase": "start"}
_orig_run = asyncio.events.Handle._run


def _name(handle: asyncio.Handle) -> str:
    cb = handle._callback
    fn = getattr(cb, "__func__", cb)
    name = getattr(fn, "__qualname__", None) or repr(cb)[:80]
    if "wakeup" in name:
        try:
            name = "task:" + cb.__self__.get_coro().__qualname__
        except AttributeError:
            pass
    return name


def _run(self: asyncio.Handle) -> None:
    t0 = time.perf_counter()
    try:
        return _orig_run(self)
    finally:
        dt = time.perf_counter() - t0
        if dt > 0.0005:
            entry = stats["cb"][(stats["phase"], _name(self))]
            entry[0] += 1
            entry[1] += dt
            entry[2] = max(entry[2], dt)


asyncio.events.Handle._run = _run
_orig_create = appmod.create_app


def create_app(*args, **kwargs) -> web.Application:
    app = _orig_create(*args, **kwargs)

    @web.middleware
    async def timing(request, handler):
        t0 = time.perf_counter()
        try:
            return await handler(request)
        finally:
            if request.remote == INNOCENT:
                stats["inn"].append((stats["phase"], request.method, request.path[:12], time.perf_counter() - t0))

    app.middlewares.insert(0, timing)

    async def phase(request):
        stats["phase"] = request.query["p"]
        if os.environ.get("PROBE_PROFILE"):
            import cProfile

            if request.query["p"] == "heavy":
                stats["prof"] = cProfile.Profile()
                stats["prof"].enable()
            elif "prof" in stats:
                stats["prof"].disable()
                stats["prof"].dump_stats(OUT + ".prof")
                del stats["prof"]
        return web.json_response({})

    app.router.add_get("/probe/phase", phase)

    async def lag_probe(app):
        async def probe():
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                stats["lag"].append((stats["phase"], time.perf_counter() - t0 - 0.005))

        app["_probe"] = asyncio.get_running_loop().create_task(probe())

    async def dump(app):
        callbacks = {f"{p}|{n}": v for (p, n), v in stats["cb"].items()}
        with open(OUT, "w") as fh:
            json.dump({"cb": callbacks, "lag": stats["lag"], "inn": stats["inn"]}, fh)

    app.on_startup.append(lag_probe)
    app.on_cleanup.insert(0, dump)
    return app


appmod.create_app = create_app
if os.environ.get("PROBE_SWITCH"):
    sys.setswitchinterval(float(os.environ["PROBE_SWITCH"]))
sys.argv = ["syngrpo.synthesis.server", *sys.argv[1:]]
runpy.run_module("syngrpo.synthesis.server", run_name="__main__", alter_sys=True)
