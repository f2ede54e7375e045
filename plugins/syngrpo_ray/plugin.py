"""Entry-point module: the ``ray`` server backend and the ``ray`` transport (nothing heavy at import)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def run_ray_backend(config, *, ready_file=None, parent_pid=None):
    """Serve ``config`` with its workers as replicas on a Ray cluster (``syngrpo serve --backend ray``)."""
    from syngrpo_ray.backend import run

    return run(config, ready_file=ready_file, parent_pid=parent_pid)


def check_ray_backend(config):
    """Pre-flight (``syngrpo check``): the server config's ``backend_options``, validated without importing Ray."""
    from syngrpo_ray.options import backend_options

    backend_options(config)


run_ray_backend.check_config = check_ray_backend  # type: ignore[attr-defined]


def ray_transport(**options):
    """The trainer's client of a ``ray`` backend: Ray actor calls to its coordinator, no HTTP."""
    from syngrpo_ray.transport import RayTransport

    return RayTransport(**options)


ray_transport.options_from = "syngrpo_ray.transport:RayTransport"  # type: ignore[attr-defined]
# it looks the coordinator up by name on the cluster: a run gives it no URL (syngrpo.synthesis.connect)
ray_transport.finds_server = True  # type: ignore[attr-defined]


@hookimpl
def register_server_backends(register):
    register("ray", run_ray_backend,
             description="workers as replicas on a Ray cluster: autoscaled, one GPU each (extra 'ray')")


@hookimpl
def register_transports(register):
    register("ray", ray_transport, description="Ray actor calls to a `syngrpo serve --backend ray` coordinator")
