"""The replica pool: autoscaling the job service's workers between ``min_replicas`` and ``max_replicas``.

The queue stays the coordinator's (one store, one queue for every replica on every host); the pool only
decides how many workers pull from it.  Every ``scale_interval_s`` it reads the backlog (queued + running
jobs) and wants ``ceil(backlog / target_jobs_per_replica)`` replicas, clamped to the bounds.  More than it
has, for ``upscale_delay_s``: it adds replicas (a replica the cluster cannot place yet waits as ``loading``,
which is what Ray's cluster autoscaler reacts to by adding a node).  Fewer, for ``downscale_delay_s``: it
retires idle replicas; a retiring replica finishes the batch it holds and takes no other, so scaling down
never interrupts a job.  A broken replica (its plugins could not load) stays listed with its reason and
counts against ``max_replicas``, so a bad configuration never creates replicas without end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from syngrpo.synthesis.server.device import DeviceSpec
from syngrpo_ray.options import RayBackendOptions
from syngrpo_ray.replica import RayRunner

log = logging.getLogger("syngrpo.synthesis.server")


class ReplicaPool:
    """A :class:`~syngrpo.synthesis.server.workers.WorkerPool` of Ray replicas."""

    def __init__(self, options: RayBackendOptions, config: Any) -> None:
        self.options = options
        self.device = options.device()
        self.spec = DeviceSpec.from_config(config, self.device)
        self.service: Any = None
        self.events: list[dict[str, Any]] = []  # scaling decisions, newest last (bounded)
        self.desired = options.min_replicas
        self._since: dict[str, float | None] = {"up": None, "down": None}
        self._task: asyncio.Task[None] | None = None
        self._n = 0

    async def start(self, service: Any) -> None:
        self.service = service
        for _ in range(self.options.min_replicas):
            self._add()
        self._event("start", self.options.min_replicas)
        self._task = asyncio.create_task(self._loop(), name="syngrpo-ray-autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _add(self) -> None:
        name = f"replica-{self._n}"
        self._n += 1
        runner = RayRunner(self.spec, name, self.options.actor_options())
        self.service.add_worker(self.device, runner, name)

    def _event(self, what: str, replicas: int) -> None:
        self.events.append({"t": time.time(), "event": what, "replicas": replicas, "desired": self.desired})
        del self.events[:-50]
        log.info("replica pool: %s -> %d replica(s) (desired %d)", what, replicas, self.desired)

    def active(self) -> list[Any]:
        return [w for w in self.service.workers if not w.retiring]

    def want(self) -> int:
        counts = self.service.store.count_by_state()
        backlog = counts["queued"] + counts["running"]
        o = self.options
        return max(o.min_replicas, min(o.max_replicas, math.ceil(backlog / o.target_jobs_per_replica)))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.scale_interval_s)
            try:
                await self.scale_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the autoscaler must survive a hiccup
                log.exception("replica pool: scaling failed")

    async def scale_once(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.desired = want = self.want()
        active = self.active()
        usable = [w for w in active if w.state != "broken"]
        if want > len(usable) and len(active) < self.options.max_replicas:
            self._since["down"] = None
            since = self._since["up"] = self._since["up"] or now
            if now - since >= self.options.upscale_delay_s:
                add = min(want - len(usable), self.options.max_replicas - len(active))
                for _ in range(add):
                    self._add()
                self._since["up"] = None
                self._event("up", len(self.active()))
        elif want < len(usable):
            self._since["up"] = None
            since = self._since["down"] = self._since["down"] or now
            if now - since >= self.options.downscale_delay_s:
                idle = [w for w in reversed(usable) if not w.current and w.state in ("ready", "loading")]
                retire = idle[: len(usable) - want]
                for w in retire:
                    w.retiring = True  # at once, so that the next look counts them out
                    if w.state == "loading" and w.task is not None:
                        w.task.cancel()  # a replica still being placed holds no job: stop waiting for room
                self._since["down"] = None
                if retire:
                    self._event("down", len(self.active()))
                await asyncio.gather(*(self.service.retire_worker(w) for w in retire))
        else:
            self._since = {"up": None, "down": None}

    def status(self) -> dict[str, Any]:
        o = self.options
        return {"replicas": len(self.active()), "desired": self.desired, "min": o.min_replicas, "max": o.max_replicas,
                "target_jobs_per_replica": o.target_jobs_per_replica, "events": self.events[-20:]}
