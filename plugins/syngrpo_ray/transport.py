"""The ``ray`` transport: the trainer's client of a ``syngrpo serve --backend ray`` coordinator, over Ray.

For a trainer that runs in the Ray cluster already (a verl driver, any Ray job): no URL, no port, no
token; it finds the coordinator by name (``name``, ``namespace``) and calls it.  Jobs and results travel
through Ray's object store.  Same contract as the ``aiohttp`` transport
(:class:`syngrpo.synthesis.transport.Transport`): ``submit`` returns once the coordinator acknowledged the
job (a full queue is waited out up to ``submit_timeout_s``, then :class:`TransportError`; a refused job is
:class:`JobRejected`), a thread asks the coordinator for finished jobs every ``poll_interval_s``, ``poll``
only reads the buffer, ``delete`` hands collected jobs back for deletion.  Access to the cluster is the
authorisation here: the HTTP front's token guards the network, Ray's own (``RAY_AUTH``) guards the cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from syngrpo.synthesis.server.clientside import BufferedTransport, ResultBuffer
from syngrpo.synthesis.transport import JobRejected, SynthesisJob, SynthesisResult, TransportError
from syngrpo_ray.address import keep_loopback
from syngrpo_ray.options import DEFAULT_NAME, DEFAULT_NAMESPACE

log = logging.getLogger("syngrpo.synthesis.transport")


class RayTransport(BufferedTransport):
    """See the module doc; ``address`` as in ``ray.init`` (null: ``$RAY_ADDRESS`` or the cluster on this machine)."""

    def __init__(self, *, address: str | None = None, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE,
                 submit_timeout_s: float = 10.0, poll_interval_s: float = 0.25, connect_timeout_s: float = 60.0,
                 call_timeout_s: float = 60.0) -> None:
        keep_loopback(address)  # before Ray is imported (a cluster on 127.0.0.1: syngrpo_ray.address)
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=address or "auto", namespace=namespace, logging_level=logging.WARNING,
                         configure_logging=False)
            except ConnectionError as exc:
                raise TransportError(f"the ray transport cannot reach a Ray cluster at {address or 'auto'!r}: {exc}. "
                                     "Start the data server with `syngrpo serve --backend ray` on the cluster "
                                     "first") from None
        self.name, self.namespace = name, namespace
        self.submit_timeout_s = submit_timeout_s
        self.poll_interval_s = poll_interval_s
        self.call_timeout_s = call_timeout_s
        self._buffer = ResultBuffer()
        self._ids: dict[str, str] = {}  # job id -> key, unfinished (guarded by the buffer's use: one poller)
        self._lock = threading.Lock()
        self._deletes: list[str] = []
        self._closed = False
        self._wake = threading.Event()
        self.actor = self._find(connect_timeout_s)
        self._poller = threading.Thread(target=self._poll_loop, name="syngrpo-ray-poll", daemon=True)
        self._poller.start()

    def _find(self, timeout: float) -> Any:
        import ray

        deadline = time.monotonic() + timeout
        while True:
            try:
                return ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                if time.monotonic() > deadline:
                    raise TransportError(f"no data-server coordinator {self.name!r} in Ray namespace "
                                         f"{self.namespace!r} after {timeout:g} s: start one with "
                                         "`syngrpo serve --backend ray`") from None
                time.sleep(0.5)

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=timeout or self.call_timeout_s)
        except ray.exceptions.RayActorError as exc:
            raise TransportError(f"the data-server coordinator {self.name!r} is gone: {str(exc).splitlines()[0]}"
                                 ) from None
        except ray.exceptions.GetTimeoutError:
            raise TransportError(f"the data-server coordinator {self.name!r} did not answer within "
                                 f"{timeout or self.call_timeout_s:g} s") from None

    # ------------------------------------------------------------------ Transport

    def submit(self, job: SynthesisJob) -> str:
        if self._closed:
            raise TransportError("the ray transport is closed")
        body = job.to_json()
        deadline = time.monotonic() + self.submit_timeout_s
        while True:
            answer = self._get(self.actor.submit.remote(body))
            if answer["ok"]:
                break
            status, err = answer.get("status", 500), answer["error"]
            text = f"{status} {err.get('code')}: {err.get('message')}"
            if status in (429, 503):
                wait = float(answer.get("retry_after") or 1)
                if time.monotonic() + wait > deadline:
                    raise TransportError(f"the ray data server did not take job {job.key!r} within "
                                         f"{self.submit_timeout_s:g} s; last: {text}")
                time.sleep(wait)
                continue
            if 400 <= status < 500:
                raise JobRejected(f"the ray data server refused job {job.key!r}: {text}")
            raise TransportError(f"the ray data server failed job {job.key!r}: {text}")
        rec = answer["job"]
        self._buffer.add(job.key, rec["id"])
        with self._lock:
            self._ids[rec["id"]] = job.key
        if rec["state"] in ("done", "failed", "cancelled"):
            self._wake.set()
        return job.key

    def _poll_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            try:
                self._poll_once()
            except Exception as exc:  # noqa: BLE001 - the poller must survive a coordinator restart
                log.debug("polling the ray data server failed: %s", exc)

    def _poll_once(self) -> None:
        with self._lock:
            ids, deletes = list(self._ids), self._deletes[:]
            self._deletes.clear()
        if deletes:
            self.actor.delete.remote(deletes)  # fire and forget: retention covers a lost one
        for start in range(0, len(ids), 200):
            for item in self._get(self.actor.finished.remote(ids[start:start + 200])):
                with self._lock:
                    key = self._ids.pop(item["id"], None)
                if key is None:
                    continue
                if item["state"] == "gone":
                    self._buffer.complete(SynthesisResult(key, "failed", error=f"the ray data server no longer "
                                                          f"knows job {item['id']}", server="ray"))
                    continue
                self._buffer.complete(SynthesisResult(key, item["state"], image_png=item.get("image"),
                                                      error=item.get("error"), seconds=item.get("seconds"),
                                                      server="ray", job_id=item["id"]))

    def poll(self) -> list[SynthesisResult]:
        self._wake.set()
        return super().poll()

    def wait(self, keys: Sequence[str], timeout: float) -> list[SynthesisResult]:
        self._wake.set()
        return super().wait(keys, timeout)

    def healthy(self) -> bool:
        if self._closed:
            return False
        try:
            return self._get(self.actor.health.remote(), 10)["status"] == "ok"
        except TransportError:
            return False

    def cancel(self, key: str) -> None:
        job_id = self._buffer.info(key)
        if job_id is not None and not self._closed:
            self._get(self.actor.cancel.remote(job_id))
            self._wake.set()

    def delete(self, results: Sequence[SynthesisResult]) -> None:
        """Delete collected jobs on the coordinator (sent by the poller thread; never raises)."""
        ids = [r.job_id for r in results if r.job_id and r.server == "ray"]
        if ids and not self._closed:
            with self._lock:
                self._deletes.extend(ids)
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        try:
            out["queue_depth"] = self._get(self.actor.health.remote(), 5)["queue_depth"]
        except TransportError:
            pass
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._poller.join(5)
        with self._lock:
            deletes = self._deletes[:]
        if deletes:
            try:
                self._get(self.actor.delete.remote(deletes), 5)
            except TransportError:
                pass
