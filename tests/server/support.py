"""Helpers of the data-server tests: scenes with known boxes, job bodies, test plugins.

Test plugins are real plugin objects registered through the registry (``get_registry([plugin])``),
so fault tests can use a synthesizer whose calls a test can hold at a gate, make
raise, make hang, and record.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from syngrpo.hookspecs import hookimpl
from syngrpo.perception import toyshapes
from syngrpo.synthesis.transport import SynthesisJob

RED_BOX = (10.0, 12.0, 40.0, 42.0)
BLUE_BOX = (60.0, 20.0, 88.0, 48.0)


def scene(width: int = 96, height: int = 64) -> tuple[Image.Image, list[tuple[float, ...]], list[str]]:
    """A grey image with a red circle and a blue square, their boxes and labels."""
    image = Image.new("RGB", (width, height), (200, 200, 200))
    toyshapes.draw_shape(image, "circle", tuple(int(v) for v in RED_BOX), "red")
    toyshapes.draw_shape(image, "square", tuple(int(v) for v in BLUE_BOX), "blue")
    return image, [RED_BOX, BLUE_BOX], ["red circle", "blue square"]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def make_job(key: str = "job-1", description: str = "a green striped wall", **changes: Any) -> SynthesisJob:
    image, boxes, labels = scene()
    job = SynthesisJob(key=key, image_png=png_bytes(image), boxes=boxes, labels=labels, description=description)
    for k, v in changes.items():
        setattr(job, k, v)
    return job


def job_body(key: str = "job-1", **changes: Any) -> dict[str, Any]:
    """The JSON body of POST /v1/jobs."""
    body = make_job(key).to_json()
    body.update(changes)
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kept_pixels_equal(original: Image.Image, result: Image.Image, mask: Image.Image) -> bool:
    """Every pixel the mask kept is the original's (the labelled foreground is untouched)."""
    keep = np.asarray(mask.convert("L")) >= 128
    return bool(keep.any()) and np.array_equal(np.asarray(original)[keep], np.asarray(result.convert("RGB"))[keep])


# ----------------------------------------------------------------------------- test plugins


@dataclass
class Control:
    """What the controlled synthesizer does: wait at ``gate``, record each call, hang until ``release``."""

    gate: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, int, list[str]]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    fail_create: bool = False

    def __post_init__(self) -> None:
        self.gate.set()  # open unless a test closes it


class ControlledSynthesizer:
    """Paints the background one flat colour; ``boom`` in a description raises, ``hang`` hangs."""

    def __init__(self, control: Control, device: str = "cpu", max_batch_size: int = 8, delay_s: float = 0.0) -> None:
        if control.fail_create:
            raise RuntimeError("model weights not found (test)")
        self.control = control
        self.device = device
        self.max_batch_size = max_batch_size
        self.delay_s = delay_s
        control.created.append(device)

    def synthesize(self, requests):
        self.control.calls.append((self.device, len(requests), [r.description for r in requests]))
        self.control.gate.wait(20)
        if self.delay_s:
            time.sleep(self.delay_s)
        for r in requests:
            if "boom" in r.description:
                raise RuntimeError(f"boom requested by {r.description!r}")
            if "hang" in r.description:
                self.control.release.wait(30)
        return [Image.new("RGB", r.image.size, (0, 128, 255)) for r in requests]


class FaultySegmenter:
    """Box masks, but raises for an image with exactly one labelled box."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def segment(self, images, boxes):
        from syngrpo.synthesis.pipeline import boxes_mask

        if any(len(b) == 1 for b in boxes):
            raise ValueError("segmenter cannot handle a single box (test)")
        return [boxes_mask(b, im.size) for im, b in zip(images, boxes, strict=True)]


class ControlledPlugin:
    """A plugin object registering the test synthesizer ``controlled`` and segmenter ``faulty``."""

    def __init__(self, control: Control) -> None:
        self.control = control

    @hookimpl
    def register_synthesizers(self, register):
        control = self.control

        def controlled(device: str = "cpu", **options: Any) -> ControlledSynthesizer:
            """Test synthesizer whose calls the test controls."""
            return ControlledSynthesizer(control, device=device, **options)

        register("controlled", controlled)

    @hookimpl
    def register_segmenters(self, register):
        register("faulty", FaultySegmenter)


async def wait_for_state(client, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 15.0
                         ) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until it is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(f"/v1/jobs/{job_id}")
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")
        await asyncio.sleep(0.02)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


TINY_SDXL_OPTIONS = {"controlnet": None, "local_files_only": True, "size": 128, "steps": 2, "multiple": 64}
