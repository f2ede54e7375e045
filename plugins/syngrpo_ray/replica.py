"""One synthesis replica: a Ray actor holding a device's segmenter and synthesizers, and the coordinator's end of it.

A replica is what a worker process is to the local server (:mod:`syngrpo.synthesis.server.worker_process`),
placed by Ray wherever the cluster has a GPU (``num_gpus: 1``; Ray sets ``CUDA_VISIBLE_DEVICES``, so the
replica's device is ``cuda``).  It runs the same code (:class:`~syngrpo.synthesis.server.device.DeviceModels`):
input PNGs in, result and mask PNGs out through Ray's object store, so no filesystem is shared with the
coordinator's store.  :class:`RayRunner` gives a :class:`~syngrpo.synthesis.server.device_worker.Worker` the
runner interface over it: a replica that dies mid-call (its node lost, ``ray.kill``, an OOM) is
:class:`~syngrpo.synthesis.server.device.DeviceLost` (its jobs go back to the queue), a call past its time-out
is given a grace to return and then the replica is killed and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from syngrpo.synthesis.pipeline import job_deadline
from syngrpo.synthesis.server.calls import CallTimeout
from syngrpo.synthesis.server.device import DeviceError, DeviceJob, DeviceLost, DeviceModels, DeviceOutcome, DeviceSpec

log = logging.getLogger("syngrpo.synthesis.server")

KILL_GRACE_S = 5.0
"""After a call's time-out, how long a replica may take to return by itself before it is killed and replaced."""


class Replica:
    """The actor: a device's plugins, one batch at a time (``max_concurrency`` 1)."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.models = DeviceModels(spec)

    def load(self) -> dict[str, Any]:
        self.models.load()
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ctx.get_node_id()[:12], "gpus": ray.get_gpu_ids()}

    def run(self, jobs: list[DeviceJob], timeout: float) -> list[DeviceOutcome]:
        with job_deadline(timeout):
            return self.models.run(jobs)


ReplicaActor = ray.remote(max_concurrency=1)(Replica)


def _failure(exc: BaseException) -> Exception:
    """A Ray error as what a worker expects: a dead actor is DeviceLost, an error inside a call DeviceError."""
    if isinstance(exc, RayActorError):
        return DeviceLost(f"the replica died ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    if isinstance(exc, RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        return DeviceError(f"{type(cause).__name__}: {cause}")
    return DeviceError(f"{type(exc).__name__}: {exc}")


class RayRunner:
    """A worker's device on a Ray replica (the runner interface of :mod:`syngrpo.synthesis.server.device_worker`)."""

    kind = "ray"

    def __init__(self, spec: DeviceSpec, name: str, actor_options: dict[str, Any]) -> None:
        self.spec = spec
        self.name = name
        self.actor_options = actor_options
        self.actor: Any = None
        self.restarts = 0
        self.loads = 0
        self.info: dict[str, Any] = {}

    async def load(self, timeout: float) -> None:
        """Place a fresh replica (waits while the cluster has no room for it) and build its plugins."""
        if self.loads:
            self.restarts += 1
        self.loads += 1
        self.shutdown()
        self.actor = ReplicaActor.options(**self.actor_options).remote(self.spec)
        try:
            self.info = await asyncio.wait_for(_awaitable(self.actor.load.remote()), timeout)
        except asyncio.TimeoutError:
            self.shutdown()
            raise DeviceError(f"TimeoutError: the replica was not placed and loaded within {timeout:g} s "
                              "(does the cluster have the resources it asks for?)") from None
        except Exception as exc:  # noqa: BLE001 - reported by the worker as why it is broken
            self.shutdown()
            raise _failure(exc) from None

    async def run(self, jobs: list[DeviceJob], timeout: float) -> list[DeviceOutcome]:
        ref = self.actor.run.remote(jobs, timeout)
        call = _awaitable(ref)
        done, _ = await asyncio.wait((call,), timeout=timeout)
        if not done:
            raise CallTimeout(f"timed out after {timeout:g} s", asyncio.ensure_future(self._settle(call)))
        try:
            return call.result()
        except Exception as exc:  # noqa: BLE001
            failure = _failure(exc)
            if isinstance(failure, DeviceLost):
                self.actor = None  # the worker loads a fresh one
            raise failure from None

    async def _settle(self, call: asyncio.Future[Any]) -> None:
        done, _ = await asyncio.wait((call,), timeout=KILL_GRACE_S)
        if done:
            with contextlib.suppress(Exception):
                call.result()  # the late answer of failed jobs: dropped
            return
        log.warning("%s: the replica ran %g s past its time-out; killing it", self.name, KILL_GRACE_S)
        self.shutdown()

    def alive(self) -> bool:
        return self.actor is not None

    def shutdown(self) -> None:
        if self.actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.actor, no_restart=True)
            self.actor = None

    def health(self) -> dict[str, Any]:
        return {"isolation": self.kind, "pid": self.info.get("pid"), "node": self.info.get("node"),
                "restarts": self.restarts}


def _awaitable(ref: Any) -> asyncio.Future[Any]:
    """An ObjectRef as an asyncio future of the running loop (Ray resolves it in its own thread)."""
    return asyncio.wrap_future(ref.future())


__all__ = ["RayRunner", "Replica", "ReplicaActor"]
