"""The label check can fail: a segmenter that keeps the wrong object fails the job.

The scene has a labelled red circle and, in front of it, a small unlabelled occluder.  The
``occluder`` segmenter below (a real plugin registered through the registry) returns the
occluder's mask instead of the circle's, so the keep mask holds the occluder only and the circle
would be repainted under its unchanged label.  The check compares the result with the original
and must fail that job -- through the pipeline, and through the real server.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import get_registry
from syngrpo.synthesis.pipeline import PipelineItem, boxes_mask, check_labelled_objects, paste_back, run_pipeline
from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.transport import SynthesisJob

from .support import RED_BOX, png_bytes, scene, wait_for_state

OCCLUDER = (14, 16, 22, 24)  # 8 x 8 = 64 px inside RED_BOX (30 x 30 = 900 px): 7 % of it


def occluded_scene() -> tuple[Image.Image, list[tuple[float, ...]], list[str]]:
    image, boxes, labels = scene()
    image.paste((250, 250, 0), OCCLUDER)  # a small yellow object in front of the red circle
    return image, boxes, labels


class OccluderSegmenter:
    """Keeps the occluder in front of the red circle, not the circle (the wrong object)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def segment(self, images, boxes):
        masks = []
        for im, bs in zip(images, boxes, strict=True):
            mask = np.asarray(boxes_mask([b for b in bs if tuple(b) != RED_BOX], im.size)).copy()
            c1, r1, c2, r2 = OCCLUDER
            mask[r1:r2, c1:c2] = 255
            masks.append(Image.fromarray(mask, "L"))
        return masks


class FlatSynthesizer:
    """Paints everything one flat colour (the pipeline pastes the kept pixels back)."""

    max_batch_size = 4

    def synthesize(self, requests):
        return [Image.new("RGB", r.image.size, (0, 128, 255)) for r in requests]


class WrongObjectPlugin:
    @hookimpl
    def register_segmenters(self, register):
        register("occluder", OccluderSegmenter)

    @hookimpl
    def register_synthesizers(self, register):
        register("flat", lambda device="cpu", **options: FlatSynthesizer())


def test_a_segmenter_that_keeps_the_occluder_fails_the_job_in_the_pipeline():
    image, boxes, labels = occluded_scene()
    (outcome,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=OccluderSegmenter(),
                              synthesizer=FlatSynthesizer())
    assert not outcome.ok and outcome.image is None
    assert outcome.error is not None and "label check failed: box 0" in outcome.error
    assert "keeps 7% of its pixels" in outcome.error


def test_the_right_object_passes_and_the_share_is_configurable():
    image, boxes, labels = occluded_scene()
    right = get_registry().create("segmenters", "box")
    (ok,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=right,
                         synthesizer=FlatSynthesizer())
    assert ok.ok, ok.error
    # a user who accepts 5 % coverage lets the occluder through: the share is what decides
    (lenient,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=OccluderSegmenter(),
                              synthesizer=FlatSynthesizer(), min_label_coverage=0.05)
    assert lenient.ok


def test_kept_pixels_are_compared_with_the_original_not_with_the_mask():
    image, boxes, _ = scene()
    keep = boxes_mask(boxes, image.size)
    result = paste_back(image, Image.new("RGB", image.size, (0, 0, 0)), keep)
    assert check_labelled_objects(image, result, boxes, keep) is None
    result.putpixel((int(RED_BOX[0]) + 5, int(RED_BOX[1]) + 5), (1, 2, 3))
    assert "1 kept pixels of box 0" in check_labelled_objects(image, result, boxes, keep)
    assert "result is" in check_labelled_objects(image, result.resize((10, 10)), boxes, keep)
    # a box entirely outside the image has no pixel to check
    assert check_labelled_objects(image, paste_back(image, image, keep), [(500, 500, 600, 600)], keep) is None


async def test_a_segmenter_that_keeps_the_occluder_fails_the_job_on_the_server(aiohttp_client, config_for):
    registry = get_registry([WrongObjectPlugin()])
    client = await aiohttp_client(create_app(config_for(segmenter="occluder", synthesizer="flat"), registry=registry))
    image, boxes, labels = occluded_scene()
    body = SynthesisJob(key="wrong-object", image_png=png_bytes(image), boxes=boxes, labels=labels,
                        description="a beach").to_json()
    resp = await client.post("/v1/jobs", json=body)
    assert resp.status in (200, 201, 202), await resp.text()
    job = await wait_for_state(client, (await resp.json())["id"])
    assert job["state"] == "failed"
    assert "label check failed: box 0" in job["error"]
