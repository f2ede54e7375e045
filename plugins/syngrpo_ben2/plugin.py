"""Entry-point module: the ``ben2`` segmenter (upstream BEN2, installed from its repository)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def ben2(**options):
    """BEN2 foreground matting (the paper's segmenter); keeps the caller's RNG states intact."""
    from syngrpo_ben2.segment import Ben2Segmenter

    return Ben2Segmenter(**options)


@hookimpl
def register_segmenters(register):
    register("ben2", ben2)
