"""The few records every part of syngrpo passes around.

They are plain dataclasses that round-trip through JSON (``to_dict`` /
``from_dict``), because samples travel to the data server and live in
checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

Box = tuple[float, float, float, float]
"""An axis-aligned box ``(x1, y1, x2, y2)`` in pixels of the image it belongs to."""


@dataclass
class Sample:
    """One training or evaluation example of any task.

    ``solution`` is the task's label in the pixel frame of ``image`` (REC: one
    box ``[x1, y1, x2, y2]``; OVD/ISR: a list of ``{"bbox_2d", "label", ...}``
    objects).  ``meta`` keeps every other field of the dataset record, so a
    custom reward can read anything the dataset had.
    """

    id: str
    task: str
    image: str
    problem: str
    solution: Any
    width: int
    height: int
    source_id: str | None = None
    generation: int = 0
    description: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def origin_id(self) -> str:
        """The id of the original (never synthesized) sample this one descends from."""
        return self.source_id or self.id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(**d)

    def evolve(self, **changes: Any) -> Sample:
        return replace(self, **changes)


@dataclass
class ParsedResponse:
    """What the response parser found in one completion; missing parts are ``None``.

    ``well_formed`` is true when every tag the prompt asked for is present exactly
    once and in order, with nothing but whitespace around them (and, in the
    Syn-GRPO format, the score is a finite number already inside [0, 1]).
    """

    text: str
    think: str | None = None
    score: float | None = None
    description: str | None = None
    answer: str | None = None
    well_formed: bool = False
