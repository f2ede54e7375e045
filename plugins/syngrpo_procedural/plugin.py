"""Entry-point module: the ``procedural`` synthesizer and the ``box`` segmenter (CPU, no model)."""

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


@hookimpl
def register_synthesizers(register):
    register("procedural", procedural)


@hookimpl
def register_segmenters(register):
    register("box", box)
