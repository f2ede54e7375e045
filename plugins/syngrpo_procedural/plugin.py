"""Entry-point module: the ``procedural`` synthesizer, the ``box`` and ``object`` segmenters (CPU, no model)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def procedural(**options):
    """New background drawn from the description's words: colours, textures, clutter, distractors (CPU)."""
    from syngrpo_procedural.background import ProceduralSynthesizer

    return ProceduralSynthesizer(**options)


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
