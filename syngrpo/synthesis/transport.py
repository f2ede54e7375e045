"""What travels between the trainer and the data server, and the transport contract.

The trainer never waits on synthesis in asynchronous mode: it submits jobs and,
once per step, collects whatever finished.  A transport plugin (``aiohttp``
over HTTP, ``inprocess`` for debugging) implements :class:`Transport`; the
trainer only ever sees this interface.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from syngrpo.types import Box

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


@dataclass
class SynthesisJob:
    """One request to repaint the background of an image around its labelled boxes.

    ``key`` is chosen by the client and makes submission idempotent: a retried
    submit with the same key never creates a second job.
    """

    key: str
    image_png: bytes
    boxes: list[Box]
    labels: list[str]
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "image": base64.b64encode(self.image_png).decode("ascii"),
            "boxes": [list(b) for b in self.boxes],
            "labels": list(self.labels),
            "description": self.description,
            "options": dict(self.options),
            "seed": self.seed,
        }


@dataclass
class SynthesisResult:
    """A finished job as the trainer sees it: the new image, or why there is none."""

    key: str
    state: JobState
    image_png: bytes | None = None
    error: str | None = None
    seconds: float | None = None
    server: str | None = None
    #: a fire-and-forget submission that no server took (the servers are down or full), not a failed synthesis
    refused: bool = False
    #: the job's id on ``server`` (``None`` when no server holds it): what ``Transport.delete`` needs
    job_id: str | None = None


class TransportError(RuntimeError):
    """No data server could take the job (all down, or all full for longer than the retry budget)."""


class Unauthorized(TransportError):
    """A server refused the client's token (401/403): every job would be refused; the run is misconfigured."""


class JobRejected(TransportError):
    """A server refused this job itself (a 4xx about its content): other jobs may still go through."""


@runtime_checkable
class Transport(Protocol):
    """The trainer's side of the data server.

    ``submit`` returns quickly (it never waits for synthesis); ``poll`` returns
    the jobs that reached a final state since the last call, each exactly once.

    A transport may also offer ``submit_nowait(job) -> key``, which returns before
    any server answered: a job that no server takes then comes back from ``poll``
    as a ``failed`` result with ``refused=True``.  The asynchronous trainer uses it
    when present (the ``aiohttp`` transport has it).

    And ``delete(results) -> None``: delete these finished jobs on their servers, rows
    and files.  The trainer calls it once a result's image is in its run directory
    (``synthesis.delete_collected``), so a server's disk holds only the jobs in flight.
    It returns at once and never raises: a server that cannot be reached is asked again
    later, and its retention deletes what is never asked for.  Both built-in transports
    have it.
    """

    def submit(self, job: SynthesisJob) -> str:
        """Queue a job; returns its key. Raises :class:`TransportError` when no server takes it."""
        ...

    def poll(self) -> list[SynthesisResult]:
        """Jobs that finished (done, failed or cancelled) since the last call."""
        ...

    def wait(self, keys: Sequence[str], timeout: float) -> list[SynthesisResult]:
        """Block until every job in ``keys`` is final or ``timeout`` passes (synchronous mode)."""
        ...

    def pending(self) -> int:
        """Jobs submitted and not yet returned by ``poll``/``wait``."""
        ...

    def healthy(self) -> bool:
        """Whether at least one server answers its health check now."""
        ...

    def close(self) -> None:
        ...
