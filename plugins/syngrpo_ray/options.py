"""The ``ray`` backend's options (``backend_options:`` of a server config; docs/data-server.md, "Ray")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from syngrpo.config.io import StrictModel

#: the coordinator's actor name and namespace unless the options say otherwise (what the ray transport looks up)
DEFAULT_NAME = "syngrpo-data-server"
DEFAULT_NAMESPACE = "syngrpo"


class RayBackendOptions(StrictModel):
    """Where the cluster is, how many replicas, what each one takes."""

    address: str | None = Field(None, description="the cluster: host:port of its head, 'auto' (one started on this "
                                "machine, else an error), or null: $RAY_ADDRESS, else the one on this machine, else "
                                "a private local cluster for this server alone")
    namespace: str = DEFAULT_NAMESPACE
    name: str = Field(DEFAULT_NAME, description="the coordinator actor's name (what the ray transport looks up)")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    #: queued + running jobs per replica the pool aims at: more backlog adds replicas, less retires them
    target_jobs_per_replica: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(0.0, ge=0, description="backlog must call for more replicas this long first")
    downscale_delay_s: float = Field(30.0, ge=0, description="and for fewer this long before idle ones retire")
    scale_interval_s: float = Field(0.5, gt=0, description="how often the pool looks at the backlog")
    replica_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="the device a replica's plugins get: cuda when it has a GPU (auto), else cpu")
    replica_num_cpus: float = Field(1.0, ge=0)
    replica_num_gpus: float | None = Field(None, ge=0, description="GPUs per replica; null: 1 for cuda, 0 for cpu")
    replica_resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per replica")
    replica_runtime_env: dict[str, Any] | None = Field(None, description="a Ray runtime_env for the replicas")

    @model_validator(mode="after")
    def _bounds(self) -> RayBackendOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.replica_device == "cuda" and self.replica_num_gpus == 0:
            raise ValueError("replica_device cuda needs replica_num_gpus above 0")
        return self

    def gpus(self) -> float:
        if self.replica_num_gpus is not None:
            return self.replica_num_gpus
        return 1.0 if self.replica_device == "cuda" else 0.0

    def device(self) -> str:
        if self.replica_device != "auto":
            return self.replica_device
        return "cuda" if self.gpus() > 0 else "cpu"

    def actor_options(self) -> dict[str, Any]:
        """``ray.remote`` options of one replica: one GPU each by default, never restarted by Ray (the pool does)."""
        opts: dict[str, Any] = {"num_cpus": self.replica_num_cpus, "num_gpus": self.gpus(), "max_restarts": 0}
        if self.replica_resources:
            opts["resources"] = dict(self.replica_resources)
        if self.replica_runtime_env:
            opts["runtime_env"] = dict(self.replica_runtime_env)
        return opts


def backend_options(config: Any) -> RayBackendOptions:
    """The validated ``backend_options`` of a server config (a clear error naming the bad key)."""
    from syngrpo.config.io import validate

    return validate(RayBackendOptions, dict(config.backend_options), source="backend_options (ray backend)")
