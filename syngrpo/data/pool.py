"""The data pool: the training set as it evolves under synthesis (paper §3.3, Figure 3).

It starts as the original samples.  Whenever the data server returns a
synthesized image for a sample, the new sample (same labels: foreground
consistency) takes its source's place, so later epochs train on it.  A failed
or late job changes nothing: the previous version stays.

Sampling is epoch-wise: each epoch is one pass over the pool in an order drawn
from ``(seed, epoch)``, so the position is two integers and a resumed run draws
exactly the batches the uninterrupted one would.  Batches run on across epoch
boundaries (every step has the same number of prompts).

The pool also keeps the book of jobs in flight (key -> which sample, from which
version, with which description), so results route back to their sample and a
resumed run can ask the server again for jobs submitted before the stop.
Everything is JSON-serialisable (:meth:`DataPool.state_dict`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from syngrpo.types import Sample

SourcePolicy = Literal["original", "latest"]


@dataclass
class PendingJob:
    """A synthesis job the server has not answered yet, and where its result goes."""

    key: str
    origin_id: str
    #: the sample (as a dict) whose image and labels were sent: the original, or the latest version
    base: dict[str, Any]
    description: str
    seed: int
    step: int
    #: wall-clock seconds (``time.time()``) of the submission, for the job timeout
    submitted_at: float
    epoch: int = 0

    @property
    def base_generation(self) -> int:
        return int(self.base.get("generation", 0))

    def base_sample(self) -> Sample:
        return Sample.from_dict(dict(self.base))


@dataclass
class PoolCounters:
    """Totals since the run began (they checkpoint with the pool)."""

    submitted: int = 0
    done: int = 0
    failed: int = 0
    expired: int = 0
    stale: int = 0
    replaced: int = 0
    skipped: int = 0
    unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class DataPool:
    """Original samples plus their synthesized replacements, with seeded epoch-wise sampling.

    ``source`` says what a new job starts from: ``original`` (always the
    original image; every result replaces whatever version is current) or
    ``latest`` (the current version; a result whose base is no longer current
    is *stale* and dropped, so a lineage never forks).
    """

    originals: Sequence[Sample]
    seed: int = 0
    source: SourcePolicy = "original"
    #: makes job keys unique to this run, so two runs sharing one server never collide
    run_tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        if not self.originals:
            raise ValueError("the data pool needs at least one sample")
        if self.source not in ("original", "latest"):
            raise ValueError(f"source must be 'original' or 'latest', got {self.source!r}")
        ids = [s.id for s in self.originals]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"sample ids must be unique; repeated: {dup}")
        self._ids: list[str] = ids
        self._originals: dict[str, Sample] = {s.id: s for s in self.originals}
        self._current: dict[str, Sample] = dict(self._originals)
        self.epoch = 0
        self.position = 0
        self._order_cache: tuple[int, list[int]] | None = None
        self.in_flight: dict[str, PendingJob] = {}
        self.counters = PoolCounters()

    # ---- sampling ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def progress(self) -> float:
        """Epochs done so far, fractional (1.0 = one full pass)."""
        return self.epoch + self.position / len(self)

    def _order(self, epoch: int) -> list[int]:
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = list(range(len(self)))
            # A string seed hashes with SHA-512: the same order in every process and Python version.
            random.Random(f"syngrpo-pool/{self.seed}/{epoch}").shuffle(order)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def draw(self, n: int) -> list[Sample]:
        """The next ``n`` samples (current versions), continuing into the next epoch when one ends."""
        if n < 1:
            raise ValueError(f"batch size must be at least 1, got {n}")
        batch: list[Sample] = []
        while len(batch) < n:
            if self.position >= len(self):
                self.epoch += 1
                self.position = 0
            idx = self._order(self.epoch)[self.position]
            batch.append(self._current[self._ids[idx]])
            self.position += 1
        return batch

    # ---- versions ---------------------------------------------------------------------
    def original(self, origin_id: str) -> Sample:
        return self._originals[origin_id]

    def current(self, origin_id: str) -> Sample:
        return self._current[origin_id]

    def synthesis_base(self, origin_id: str) -> Sample:
        """What a new job for this sample starts from (see ``source``)."""
        return self._originals[origin_id] if self.source == "original" else self._current[origin_id]

    def samples(self) -> list[Sample]:
        """Current versions of every sample, in dataset order."""
        return [self._current[i] for i in self._ids]

    def synthesized_fraction(self) -> float:
        """Share of samples whose current version is synthesized."""
        return sum(1 for i in self._ids if self._current[i].generation > 0) / len(self)

    def replace(self, source_id: str, new_sample: Sample, *, base_generation: int | None = None) -> bool:
        """Put ``new_sample`` in the place of sample ``source_id``; returns whether it was taken.

        With ``source: latest`` and a ``base_generation`` that is no longer the
        current version's, the result is stale and dropped (counted).
        """
        if source_id not in self._originals:
            raise KeyError(f"no sample with id {source_id!r} in the pool")
        if new_sample.origin_id != source_id:
            raise ValueError(
                f"sample {new_sample.id!r} descends from {new_sample.origin_id!r}, not from {source_id!r}"
            )
        if (
            self.source == "latest"
            and base_generation is not None
            and self._current[source_id].generation != base_generation
        ):
            self.counters.stale += 1
            return False
        self._current[source_id] = new_sample
        self.counters.replaced += 1
        return True

    # ---- jobs in flight ---------------------------------------------------------------
    def can_submit(self, origin_id: str, max_in_flight: int) -> bool:
        """One job per sample at a time, and never more than ``max_in_flight`` overall."""
        if len(self.in_flight) >= max_in_flight:
            return False
        return all(job.origin_id != origin_id for job in self.in_flight.values())

    def track(self, job: PendingJob) -> None:
        if job.key in self.in_flight:
            raise ValueError(f"job {job.key!r} is already in flight")
        self.in_flight[job.key] = job
        self.counters.submitted += 1

    def untrack(self, key: str) -> PendingJob | None:
        """Forget a job that never reached the server (submission failed)."""
        job = self.in_flight.pop(key, None)
        if job is not None:
            self.counters.submitted -= 1
            self.counters.skipped += 1
        return job

    def take(self, key: str) -> PendingJob | None:
        """The job a result belongs to, removed from the book; ``None`` for a key we do not know (late or foreign)."""
        job = self.in_flight.pop(key, None)
        if job is None:
            self.counters.unknown += 1
        return job

    def expire(self, now: float, timeout: float) -> list[PendingJob]:
        """Abandon jobs older than ``timeout`` seconds: their samples keep their current version."""
        late = [job for job in self.in_flight.values() if now - job.submitted_at > timeout]
        for job in late:
            del self.in_flight[job.key]
            self.counters.expired += 1
        return late

    # ---- checkpointing ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: position, replaced samples, jobs in flight, counters."""
        return {
            "seed": self.seed,
            "source": self.source,
            "run_tag": self.run_tag,
            "epoch": self.epoch,
            "position": self.position,
            "ids": list(self._ids),
            "replaced": {i: s.to_dict() for i, s in self._current.items() if s is not self._originals[i]},
            "in_flight": [asdict(job) for job in self.in_flight.values()],
            "counters": self.counters.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the originals must be the same samples."""
        if list(state["ids"]) != self._ids:
            raise ValueError(
                "the checkpoint's data pool was built from other samples (ids differ): resume with the same "
                "data config as the original run"
            )
        self.seed = int(state["seed"])
        self.source = state["source"]
        self.run_tag = str(state["run_tag"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order_cache = None
        self._current = dict(self._originals)
        for origin_id, d in state.get("replaced", {}).items():
            self._current[origin_id] = Sample.from_dict(d)
        self.in_flight = {j["key"]: PendingJob(**j) for j in state.get("in_flight", [])}
        self.counters = PoolCounters(**state.get("counters", {}))
