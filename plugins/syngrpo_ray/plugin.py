"""Entry-point module: the ``ray`` server backend and the ``ray`` transport (nothing heavy at import)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def run_ray_backend(config, *, ready_file=None, parent_pid=None):
    """Serve ``config`` with its workers as replicas on a Ray cluster (``syngrpo serve --backend ray``)."""
    from syngrpo_ray.backend import run

    return run(config, ready_file=ready_file, parent_pid=parent_pid)


def ray_transport(**options):
    """The trainer's client of a ``ray`` backend: Ray actor calls to its coordinator, no HTTP."""
    from syngrpo_ray.transport import RayTransport

    return RayTransport(**options)


ray_transport.options_from = "syngrpo_ray.transport:RayTransport"  # type: ignore[attr-defined]


@hookimpl
def register_server_backends(register):
    register("ray", run_ray_backend,
             description="workers as replicas on a Ray cluster: autoscaled, one GPU each (extra 'ray')")


@hookimpl
def register_transports(register):
    register("ray", ray_transport, description="Ray actor calls to a `syngrpo serve --backend ray` coordinator")
