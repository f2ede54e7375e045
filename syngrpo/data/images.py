"""Loading the images samples point at: one place, so every reader sees the same pixels (RGB, file closed)."""

from __future__ import annotations

from pathlib import Path


def load_rgb(path: str | Path):
    """An image file as an RGB PIL image (loaded, file closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def load_sample_images(sample):
    """What :func:`syngrpo.models.prompts.encode_prompts` takes for one sample: its image (RGB), or the list of
    its images in prompt order where it shows several (pass ``box_images=[s.box_image ...]`` with them)."""
    if not getattr(sample, "other_images", ()):
        return load_rgb(sample.image)
    return [load_rgb(p) for p in sample.images]
