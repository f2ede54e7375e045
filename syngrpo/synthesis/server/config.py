"""The data server's configuration (``syngrpo serve -c server.yaml``).

Defaults serve on a laptop: the ``procedural`` synthesizer and the ``box`` segmenter on one CPU
worker, bound to 127.0.0.1.  ``configs/server_sdxl_ben2.yaml`` is the paper's GPU server.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syngrpo.config.io import StrictModel
from syngrpo.errors import ConfigError

#: environment variable read for the bearer token when the config has none
TOKEN_ENV = "SYNGRPO_SERVER_TOKEN"

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps(:\d+)?|xpu(:\d+)?)$")
#: a token is sent in an HTTP header: printable ASCII without spaces
_TOKEN = re.compile(r"[!-~]{8,4096}")


def token_problem(token: str) -> str | None:
    """Why ``token`` is not acceptable as a bearer token (``None`` when it is).

    The one rule for every source (config file, ``--set``, ``$SYNGRPO_SERVER_TOKEN``, the
    trainer's ``synthesis.token``): at least 8 printable ASCII characters, no whitespace.
    """
    if len(token) < 8:
        return "a token must be at least 8 characters"
    if not _TOKEN.fullmatch(token):
        return "a token must be printable ASCII without spaces or control characters (at most 4096)"
    return None


def check_token(token: str | None, source: str) -> str | None:
    """``token`` if acceptable (or ``None``); a :class:`ConfigError` naming ``source`` otherwise."""
    if token is None:
        return None
    why = token_problem(token)
    if why:
        raise ConfigError(f"{source}: {why}")
    return token


def resolve_token(configured: str | None, source: str = "token") -> str | None:
    """The configured token, else ``$SYNGRPO_SERVER_TOKEN`` (empty = unset); both checked the same way."""
    if configured is not None:
        return check_token(configured, source)
    env = os.environ.get(TOKEN_ENV)
    if not env:
        return None
    return check_token(env, f"${TOKEN_ENV}")


class ServerConfig(StrictModel):
    """Every key of a data-server config; see docs/data-server.md for what each one does."""

    host: str = Field("127.0.0.1", description="address to bind; non-loopback needs a token")
    port: int = Field(8765, ge=0, le=65535, description="TCP port; 0 picks a free one")
    token: str | None = Field(None, description=f"bearer token clients must send (or env {TOKEN_ENV})")
    workers: list[str] = Field(default_factory=lambda: ["cpu"],
                               description="one worker per entry, bound to that device; an integer N means N cpu workers")
    worker_isolation: Literal["auto", "process", "thread"] = Field(
        "auto", description="where each worker's device runs: its own process (no shared interpreter lock or global "
        "RNG state between devices; a hung call is killed), a thread of the server, or auto: process, unless the "
        "plugins were handed over as a registry object (tests, the inprocess transport)")
    worker_nice: int = Field(
        10, ge=0, le=19, description="worker processes lower their CPU priority by this much (nice), so the "
        "server's event loop, which answers every client, is never starved of CPU by synthesis on the same cores; "
        "0 keeps the server's priority")
    backend: str = Field("local", description="who runs the workers: local (this server's processes) or a server "
                         "backend plugin (ray: replicas on a Ray cluster)")
    backend_options: dict[str, Any] = Field(default_factory=dict,
                                            description="options of the backend (docs/data-server.md)")
    queue_size: int = Field(64, ge=1, description="queued jobs beyond this are answered 429 (but see client_queue_share)")
    batch_size: int = Field(1, ge=1, description="queued jobs one synthesizer call may take")
    batch_wait_s: float = Field(0.0, ge=0.0, le=60.0, description="how long a worker waits to fill a batch")
    synthesizer: str = Field("procedural", description="default synthesizer plugin")
    synthesizer_options: dict[str, Any] = Field(default_factory=dict)
    extra_synthesizers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="more synthesizers a job may name in options.synthesizer, with their options")
    segmenter: str = Field("box", description="segmenter plugin")
    segmenter_options: dict[str, Any] = Field(default_factory=dict)
    plugins: list[str] = Field(default_factory=list, description="extra plugin modules (names or .py files) to import and register")
    data_dir: Path = Field(Path("server-data"), description="SQLite database and images live here")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    max_boxes: int = Field(100, ge=1)
    max_label_chars: int = Field(200, ge=1)
    max_description_chars: int = Field(1000, ge=1)
    job_timeout_s: float = Field(600.0, gt=0, description="one synthesizer call per job; a batch gets this times its size")
    load_timeout_s: float = Field(1800.0, gt=0, description="creating (loading) a segmenter or synthesizer")
    max_attempts: int = Field(3, ge=1, description="a job running when the server died this many times is failed")
    max_hung_calls: int = Field(2, ge=1, description="timed-out calls after which a worker stops taking jobs")
    min_foreground_fraction: float = Field(0.05, ge=0.0, le=1.0,
                                           description="a box with less segmented foreground is kept whole")
    mask_threshold: int = Field(128, ge=1, le=255)
    min_label_coverage: float = Field(0.25, ge=0.0, le=1.0,
                                      description="a result whose kept mask covers less of a labelled box fails")
    max_label_edge_gap: float = Field(0.1, ge=0.0, le=1.0,
                                      description="a result whose kept mask stays farther from a side of a labelled "
                                                  "box (share of its width / height) fails; 1 turns the rule off")
    label_segmenter: str | None = Field(
        None, description="the segmenter the label check asks for each labelled object at its box on the original "
                          "(null: the job's segmenter); another one is a second opinion")
    label_segmenter_options: dict[str, Any] = Field(default_factory=dict)
    min_label_object_coverage: float = Field(
        0.8, ge=0.0, le=1.0, description="a result that keeps less of a labelled object's own pixels (the label "
                                         "segmenter's mask of it at its box) fails; 0 turns the rule off")
    metrics_window: int = Field(1000, ge=1, description="finished jobs the mean/p95 job time is computed over")
    max_options_bytes: int = Field(16 * 1024, ge=64, description="a job's options as JSON, in bytes (422); every "
                                   "string in them is bounded by max_description_chars too")
    max_list_bytes: int = Field(4 * 1024 * 1024, ge=4096,
                                description="a list answer stops at this many bytes of jobs; next_after gives the rest")
    max_body_bytes_in_flight: int = Field(
        128 * 1024 * 1024, ge=1024,
        description="decoded bytes of request bodies being read and checked at once, all clients together; "
        "beyond it: 503 busy + Retry-After")
    client_body_bytes_in_flight: int | None = Field(
        None, ge=1024, description="the same for one client (its address); beyond it: 429 client_busy; null: half "
        "of max_body_bytes_in_flight, at least max_request_bytes")
    client_concurrency: int = Field(4, ge=1, description="requests of one client handled at once; its others "
                                    "wait their turn")
    client_waiting: int = Field(256, ge=0, description="requests of one client waiting their turn; beyond it: 429 "
                                "client_busy")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive whole within this (408)")
    read_timeout_s: float = Field(30.0, gt=0, description="a connection idle this long between requests (or "
                                  "stalled before its headers arrive) is closed")
    max_connections: int | None = Field(
        None, ge=1, description="connections at once; at the cap the longest-idle one is closed, else the new one; "
        "null: what the descriptor limit leaves")
    # -- fairness between clients (docs/data-server.md, "Clients, shares and fairness")
    client_queue_share: float = Field(
        0.5, gt=0.0, le=1.0, description="a client with fewer queued jobs than this share of queue_size is taken "
        "even when the queue is full (up to 2 x queue_size in all), so one client cannot keep others out")
    scheduling: Literal["fair", "fifo"] = Field(
        "fair", description="fair: the next job is the oldest of the client that used the workers least lately; "
        "fifo: the oldest job (first come, first served)")
    fair_share_half_life_s: float = Field(
        300.0, gt=0, description="a client's worker-seconds count half after this long when the next job is chosen")
    # -- a bounded disk (docs/data-server.md, "Deleting jobs, retention and the disk budget")
    retention_s: float | None = Field(
        86400.0, gt=0, description="finished (done, failed, cancelled) jobs are deleted, rows and files, this long "
        "after they finished; null keeps them until a client deletes them")
    retention_sweep_s: float = Field(60.0, gt=0, le=3600,
                                     description="how often the server looks for jobs past retention")
    retention_batch: int = Field(500, ge=1, description="jobs one retention sweep deletes at most (a backlog "
                                 "drains in sweeps a second apart, the server answering in between)")
    tombstone_s: float = Field(
        7 * 86400.0, gt=0, description="a deleted job's key is remembered this long: the same content sent again "
        "makes a fresh job, other content is 409 key_conflict")
    max_store_bytes: int | None = Field(
        None, ge=0, description="byte budget of the store (job files and database); a submission that would pass "
        "it gets 429 store_full; null: no budget")
    min_free_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="free bytes kept on the store's filesystem; a submission that would "
        "leave less gets 429 disk_low; 0: no floor")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("workers must be a list of devices (cpu, cuda:0, ...) or a count")
        if isinstance(v, int):
            if v < 1:
                raise ValueError("workers must be at least 1")
            return ["cpu"] * v
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("workers")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one worker is needed")
        for d in v:
            if not _DEVICE.match(d):
                raise ValueError(f"{d!r} is not a device (cpu, cuda, cuda:N, mps, xpu:N)")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        why = token_problem(v) if v is not None else None
        if why:
            raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _budget(self) -> ServerConfig:
        if self.max_body_bytes_in_flight < self.max_request_bytes:
            raise ValueError(f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) must be at least "
                             f"max_request_bytes ({self.max_request_bytes}): else no large job could be sent")
        if self.client_body_bytes_in_flight is not None and self.client_body_bytes_in_flight < self.max_request_bytes:
            raise ValueError(f"client_body_bytes_in_flight ({self.client_body_bytes_in_flight}) must be at least "
                             f"max_request_bytes ({self.max_request_bytes}): else no large job could be sent")
        return self

    def client_body_budget(self) -> int:
        """Decoded body bytes one client may hold at once (``client_body_bytes_in_flight`` or its default)."""
        if self.client_body_bytes_in_flight is not None:
            return min(self.client_body_bytes_in_flight, self.max_body_bytes_in_flight)
        return max(self.max_request_bytes, self.max_body_bytes_in_flight // 2)

    def client_queue_limit(self) -> int:
        """Queued jobs one client may have (``client_queue_share`` of ``queue_size``, at least 1)."""
        return max(1, math.ceil(self.client_queue_share * self.queue_size - 1e-9))

    def served_synthesizers(self) -> dict[str, dict[str, Any]]:
        """Every synthesizer a job may name, with its options; the default comes first."""
        out = {self.synthesizer: dict(self.synthesizer_options)}
        for name, opts in self.extra_synthesizers.items():
            out.setdefault(name, dict(opts))
        return out

    def with_env_token(self) -> ServerConfig:
        """This config with the token taken from ``$SYNGRPO_SERVER_TOKEN`` when it has none."""
        if self.token is None and os.environ.get(TOKEN_ENV):
            return self.model_copy(update={"token": resolve_token(None)})
        return self


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: a token that guards a server reachable from the network: this long, with this many different characters
NETWORK_TOKEN_CHARS = 16
NETWORK_TOKEN_DISTINCT = 8


def network_token_problem(token: str) -> str | None:
    """Why ``token`` is too weak to guard a server bound beyond loopback (``None``: strong enough).

    On loopback the 8-character rule of :func:`token_problem` is enough (only this machine can
    guess); across a network a token must resist guessing: 16+ characters with 8+ different ones
    (``password`` and ``aaaaaaaaaaaaaaaa`` fail, ``secrets.token_urlsafe(24)`` passes, ~190 bits).
    """
    if len(token) < NETWORK_TOKEN_CHARS:
        return f"it has {len(token)} characters; a token for a network address needs at least {NETWORK_TOKEN_CHARS}"
    if len(set(token)) < NETWORK_TOKEN_DISTINCT:
        return (f"it has only {len(set(token))} different characters; a token for a network address needs at "
                f"least {NETWORK_TOKEN_DISTINCT}")
    return None


def check_bind_security(host: str, token: str | None) -> None:
    """Refuse to expose the server beyond loopback without a bearer token, or with a weak one."""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"refusing to bind {host!r} without a token: a non-loopback address exposes the data server "
            f"to the network. Set `token:` in the config or ${TOKEN_ENV}, or bind 127.0.0.1."
        )
    why = network_token_problem(token)
    if why:
        raise ConfigError(
            f"refusing to bind {host!r} with a weak token: {why}. Make one with "
            "`python -c \"import secrets; print(secrets.token_urlsafe(24))\"` and put it in "
            f"${TOKEN_ENV}, or bind 127.0.0.1."
        )
