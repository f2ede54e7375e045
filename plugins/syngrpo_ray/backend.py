"""``syngrpo serve --backend ray``: connect to a Ray cluster, start the coordinator, serve until stopped.

This process is the coordinator's owner (a Ray driver), not the server itself: it places the coordinator
actor on its own node (where ``data_dir`` is), waits until its HTTP front answers, writes the ready file
(``url``, ``host``, ``port``, this ``pid``), then watches.  SIGTERM, Ctrl-C or the death of ``--parent-pid``
stop the coordinator gracefully (running jobs go back to the queue, replicas are killed) and end this
process; a coordinator that dies ends it with an error, so that whoever supervises it (a trainer's
``spawn_server``, systemd) starts a new one on the same store, which recovers it as after any crash.  The
coordinator is owned by this process: if this process is killed outright, Ray ends the coordinator too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError, SyngrpoError
from syngrpo.synthesis.server.config import ServerConfig, check_bind_security, check_token
from syngrpo.synthesis.server.files import atomic_write
from syngrpo_ray.address import keep_loopback
from syngrpo_ray.options import RayBackendOptions, backend_options

log = logging.getLogger("syngrpo.synthesis.server")

#: seconds between two checks that the coordinator still answers
WATCH_INTERVAL_S = 1.0


class CoordinatorGone(SyngrpoError):
    """The coordinator actor died (its process was killed, its node lost)."""


def connect(options: RayBackendOptions) -> None:
    """``ray.init`` with the options' address (null: Ray's own search: ``$RAY_ADDRESS``, the cluster started on
    this machine, else a private local one); a loopback address works as given (:mod:`syngrpo_ray.address`)."""
    keep_loopback(options.address)
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=options.address, namespace=options.namespace, logging_level=logging.WARNING,
                 configure_logging=False)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {options.address!r}: {exc}. Start one with "
                          "`ray start --head` (docs/data-server.md, \"Ray\") or set backend_options.address") from None


def start_coordinator(config: ServerConfig, options: RayBackendOptions, timeout: float = 120.0) -> tuple[Any, dict]:
    """Place the coordinator on this node and start it; returns ``(actor handle, where it listens)``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from syngrpo_ray.coordinator import CoordinatorActor

    node = ray.get_runtime_context().get_node_id()
    try:
        actor = CoordinatorActor.options(
            name=options.name, namespace=options.namespace,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(config, options)
    except ValueError as exc:  # the name is taken
        raise ConfigError(f"a coordinator named {options.name!r} already runs in namespace {options.namespace!r} "
                          f"({exc}); stop it or set backend_options.name") from None
    try:
        info = ray.get(actor.start.remote(), timeout=timeout)
    except Exception as exc:
        ray.kill(actor, no_restart=True)
        cause = getattr(exc, "cause", None) or exc
        raise SyngrpoError(f"the Ray coordinator did not start: {type(cause).__name__}: {cause}") from None
    return actor, info


def run(config: ServerConfig, *, ready_file: str | Path | None = None, parent_pid: int | None = None) -> None:
    """Serve ``config`` on a Ray cluster until stopped (see the module doc)."""

    options = backend_options(config)
    check_token(config.token, "token")
    check_bind_security(config.host, config.token)
    if parent_pid is not None:
        from syngrpo.synthesis.server.runner import set_parent_death_signal

        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:
            return
    # the store lives on this node: the coordinator (pinned here) must find it whatever its working directory
    config = config.model_copy(update={"data_dir": Path(config.data_dir).resolve()})
    stop = threading.Event()
    connect(options)
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    actor, info = start_coordinator(config, options)
    try:
        log.info("syngrpo data server (ray backend) listening on %s; coordinator %r in namespace %r, replicas %d..%d",
                 info["url"], options.name, options.namespace, options.min_replicas, options.max_replicas)
        if ready_file is not None:
            import json

            atomic_write(Path(ready_file), json.dumps({
                "url": info["url"], "host": info["host"], "port": info["port"], "pid": os.getpid(),
                "backend": "ray", "coordinator_pid": info["pid"], "name": options.name,
                "namespace": options.namespace}).encode())
        _watch(actor, stop, parent_pid)
    finally:
        _stop(actor)


def _watch(actor: Any, stop: threading.Event, parent_pid: int | None) -> None:
    import ray

    while not stop.wait(WATCH_INTERVAL_S):
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("the trainer (pid %d) that started this server is gone: stopping", parent_pid)
            return
        try:
            ray.get(actor.ping.remote(), timeout=30)
        except ray.exceptions.RayActorError as exc:
            raise CoordinatorGone(f"the coordinator died ({str(exc).splitlines()[0][:200]}); start the server "
                                  "again: the store recovers its jobs") from None
        except ray.exceptions.GetTimeoutError:
            log.warning("the coordinator did not answer within 30 s")


def _stop(actor: Any) -> None:
    import ray

    t0 = time.monotonic()
    try:
        ray.get(actor.stop.remote(), timeout=30)
    except Exception as exc:  # noqa: BLE001 - it may be dead already
        log.debug("stopping the coordinator: %s", exc)
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001
        pass
    log.info("the ray backend stopped in %.1f s", time.monotonic() - t0)
