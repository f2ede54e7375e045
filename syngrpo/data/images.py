"""Loading the images samples point at: one place, so every reader sees the same pixels (RGB, file closed)."""

from __future__ import annotations

from pathlib import Path


def load_rgb(path: str | Path):
    """An image file as an RGB PIL image (loaded, file closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
