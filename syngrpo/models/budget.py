"""The pixel budget of a policy's image processor: one dict for the trainer's processor and vLLM's.

Kept apart from :mod:`syngrpo.models.prompts` (which re-exports it) so that a model family's default
``image_kwargs`` can use it without an import circle.
"""

from __future__ import annotations

from typing import Any


def pixel_budget(bundle: Any, *, max_pixels: int | None = None,
                 min_pixels: int | None = None) -> dict[str, int]:
    """The image processor's ``size`` for this bundle: ``{"shortest_edge": min pixels, "longest_edge": max pixels}``.

    ``max_pixels`` / ``min_pixels`` override the bundle's (``model.max_pixels`` / ``min_pixels``), which
    override the processor's own.  :func:`encode_prompts` passes it to the processor, and the vLLM engine
    passes the same dict to vLLM's (``mm_processor_kwargs={"size": ...}``): ``size`` is the key every
    patch-grid family's image processor reads (GLM-4.1V's ignores ``max_pixels``), so an image is
    sampled and scored at one resolution.
    """
    max_pixels = max_pixels if max_pixels is not None else bundle.max_pixels
    min_pixels = min_pixels if min_pixels is not None else bundle.min_pixels
    own = bundle.processor.image_processor.size
    get = own.get if isinstance(own, dict) else lambda k: getattr(own, k, None)  # dict or transformers' SizeDict
    low = min_pixels if min_pixels is not None else get("shortest_edge")
    high = max_pixels if max_pixels is not None else get("longest_edge")
    if low is None or high is None:
        raise ValueError(f"{type(bundle.processor.image_processor).__name__} has no pixel budget "
                         "(size.shortest_edge / size.longest_edge): set model.min_pixels and model.max_pixels")
    size = {"shortest_edge": int(low), "longest_edge": int(high)}
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
    return size
