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

    **Several images.**  A sample may show the model more than one image
    (:attr:`images`, in prompt order).  ``image``, ``width`` and ``height`` are
    always those of the *box image*, the one image whose pixel frame the label is
    in (a REC answer's box is in one image's frame); it sits at index
    ``box_image`` of :attr:`images`.  ``other_images`` holds the rest, in prompt
    order, unlabelled.  One image (``other_images == ()``, ``box_image == 0``) is
    the common case, and everything that reads ``image`` (synthesis, transforms,
    preflight) works on the box image unchanged; the other images travel as they are.
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
    #: the images shown besides ``image``, in prompt order (``images`` puts ``image`` at ``box_image``)
    other_images: tuple[str, ...] = ()
    #: index of ``image`` (the image the label's boxes are in) among :attr:`images`
    box_image: int = 0

    def __post_init__(self) -> None:
        others = self.other_images
        if isinstance(others, str) or not isinstance(others, (list, tuple)):
            raise ValueError(f"sample {self.id!r}: other_images must be a list of paths, got {others!r}")
        self.other_images = tuple(str(p) for p in others)
        if (
            isinstance(self.box_image, bool)
            or not isinstance(self.box_image, int)
            or not 0 <= self.box_image <= len(self.other_images)
        ):
            raise ValueError(
                f"sample {self.id!r}: box_image must be an index into its "
                f"{len(self.other_images) + 1} images (0..{len(self.other_images)}), "
                f"got {self.box_image!r}"
            )

    @property
    def images(self) -> tuple[str, ...]:
        """Every image of the prompt, in order; ``images[box_image] == image``."""
        others = self.other_images
        return (*others[: self.box_image], self.image, *others[self.box_image :])

    @property
    def num_images(self) -> int:
        return len(self.other_images) + 1

    @property
    def origin_id(self) -> str:
        """The id of the original (never synthesized) sample this one descends from."""
        return self.source_id or self.id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        d = dict(d)
        if "other_images" in d:
            d["other_images"] = tuple(d["other_images"] or ())
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
