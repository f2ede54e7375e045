"""Entry-point module: the ``sam`` segmenter (transformers' SamModel, or Meta's segment_anything) and its tiny
model ``sam``."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl
from syngrpo_sam.tiny import build_tiny_sam


def sam(**options):
    """Segment Anything prompted with the labelled boxes (transformers SamModel or segment_anything)."""
    from syngrpo_sam.segment import SamSegmenter

    return SamSegmenter(**options)


@hookimpl
def register_segmenters(register):
    register("sam", sam)


@hookimpl
def register_tiny_models(register):
    register("sam", build_tiny_sam, description="a tiny random SamModel + processor that the sam segmenter loads")
