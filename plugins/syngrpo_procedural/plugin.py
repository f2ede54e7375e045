"""Entry-point module: the ``procedural`` synthesizer, the ``box`` and ``object`` segmenters (CPU, no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from syngrpo.hookspecs import hookimpl


class ProceduralJobOptions(BaseModel):
    """Per-job options of ``procedural`` and their bounds (the server refuses others with a 422).

    The bounds keep one job's work small: drawing cost grows with distractors and clutter marks.
    """

    model_config = ConfigDict(extra="forbid")

    distractors: int | None = Field(None, ge=0, le=64, description="extra shapes no label names")
    clutter: int | None = Field(None, ge=0, le=256, description="small muted marks on the background")
    distractor_classes: list[str] | None = Field(None, max_length=32,
                                                 description="labels to draw distractors from ('red circle')")
    tones: Literal["vivid", "muted"] | None = Field(
        None, description="vivid: the named colours as they are; muted: near-grey tints of them")


def procedural(**options):
    """New background drawn from the description's words: colours, textures, clutter, distractors (CPU)."""
    from syngrpo_procedural.background import ProceduralSynthesizer

    return ProceduralSynthesizer(**options)


procedural.job_options = ProceduralJobOptions  # type: ignore[attr-defined]


def box(**options):
    """Foreground = the labelled boxes themselves (no model)."""
    from syngrpo_procedural.background import BoxSegmenter

    return BoxSegmenter(**options)


def object_segmenter(**options):
    """Foreground = the pixels inside each labelled box that differ from the colours around it (no model)."""
    from syngrpo_procedural.segment import ObjectSegmenter

    return ObjectSegmenter(**options)


@hookimpl
def register_synthesizers(register):
    register("procedural", procedural)


@hookimpl
def register_segmenters(register):
    register("box", box)
    register("object", object_segmenter)
