"""What a job is, as the HTTP API and the store see it: its record, its tombstone, its states.

Its own module because these are plain values with neither database nor disk behind them: the
store (:mod:`.store`) makes them from rows, the job service (:mod:`.workers`) and the handlers
(:mod:`.app`) answer with them, and none of those readers needs SQLite to know what a job holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
#: why a job was deleted (the ``reason`` of its tombstone and the label of ``syngrpo_jobs_deleted_total``)
DELETE_REASONS = ("client", "retention")


@dataclass
class JobRecord:
    """One row of the jobs table, with the request fields decoded."""

    id: str
    key: str
    fingerprint: str
    state: str
    synthesizer: str
    group_key: str
    width: int
    height: int
    boxes: list[list[float]]
    labels: list[str]
    description: str
    options: dict[str, Any]
    seed: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    error: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    seq: int = 0
    #: bytes of the job's files on disk (input, and result and mask once written)
    bytes: int = 0
    #: a client deleted it while it ran: it is cancelled, then deleted, when its call returns
    delete_requested: bool = False
    #: who sent it (:func:`~syngrpo.synthesis.server.admission.client_of`): its share of the queue and workers
    client: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The public view of a job (what ``GET /v1/jobs/{id}`` answers)."""
        base = f"/v1/jobs/{self.id}"
        links = {"self": base, "input": f"{base}/input.png", "cancel": f"{base}/cancel"}
        if self.state == "done":
            links.update({"result": f"{base}/result", "image": f"{base}/result.png", "mask": f"{base}/mask.png"})
        return {
            "id": self.id,
            "key": self.key,
            "state": self.state,
            "synthesizer": self.synthesizer,
            "width": self.width,
            "height": self.height,
            "boxes": self.boxes,
            "labels": self.labels,
            "description": self.description,
            "options": self.options,
            "seed": self.seed,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "error": self.error,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "delete_requested": self.delete_requested,
            "links": links,
        }


@dataclass
class Tombstone:
    """What is left of a deleted job: enough to answer its id (410) and to keep its key's content."""

    id: str
    key: str
    fingerprint: str
    state: str  # the state it was deleted in
    deleted_at: float
    reason: str
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The answer of ``DELETE /v1/jobs/{id}`` (every time it is asked: deletion is idempotent)."""
        return {"id": self.id, "key": self.key, "state": "deleted", "final_state": self.state,
                "deleted_at": self.deleted_at, "reason": self.reason}


@dataclass
class DeleteOutcome:
    """What :meth:`~syngrpo.synthesis.server.store.JobStore.delete` did with each job it was given."""

    deleted: list[JobRecord] = field(default_factory=list)  # rows gone now (their folders are the caller's)
    deleting: list[JobRecord] = field(default_factory=list)  # running: cancelled and deleted when the call returns
    already: list[Tombstone] = field(default_factory=list)  # deleted before
    missing: list[str] = field(default_factory=list)  # never known (or their tombstone expired)
