"""Entry-point module: the ``sam`` segmenter (transformers' SamModel, or Meta's segment_anything)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def sam(**options):
    """Segment Anything prompted with the labelled boxes (transformers SamModel or segment_anything)."""
    from syngrpo_sam.segment import SamSegmenter

    return SamSegmenter(**options)


@hookimpl
def register_segmenters(register):
    register("sam", sam)
