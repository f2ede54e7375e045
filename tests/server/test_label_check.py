"""The label check can fail: a segmenter that keeps the wrong object fails the job.

The scene has a labelled red circle and, in front of it, a small unlabelled occluder.  The
``occluder`` segmenter below (a real plugin registered through the registry) returns the
occluder's mask instead of the circle's, so the keep mask holds the occluder only and the circle
would be repainted under its unchanged label.  The check compares the result with the original
and must fail that job -- through the pipeline, and through the real server.

Issue #23's counterexample: a wrong mask that keeps the top 30 % of a circle's box passed the
coverage rule (30 % >= 25 %) with 75 % of the circle repainted; the box's sides catch it (a tight
box touches its object on every side).  The toy shapes' own masks say how much of the object a
keep mask holds, so every number here is measured, not assumed.

A wrong mask that reaches every side (a frame along the box, an object behind the labelled one) passed the
sides and the share; the object rule fails it: the label segmenter's mask of the labelled object, asked at its
box on the original, must be kept (``label_object_masks``).  The tests whose segmenter hands back a fixed mask
whatever the image (``MaskSegmenter``) take the real ``object`` segmenter as that second opinion
(``label_segmenter``); the whole-image case uses a stand-in for BEN2's salient foreground as the job's only
segmenter.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from syngrpo.hookspecs import hookimpl
from syngrpo.perception import toyshapes
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

        register("salient", SalientSegmenter)

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
    # a user who accepts 5 % coverage, any distance from the box's sides and no check of the object's own pixels
    # lets the occluder through
    (lenient,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=OccluderSegmenter(),
                              synthesizer=FlatSynthesizer(), min_label_coverage=0.05, max_label_edge_gap=1.0,
                              min_label_object_coverage=0.0)
    assert lenient.ok
    # the object rule alone does not: the `object` segmenter finds the circle at its box, the occluder keeps 7 %
    (second,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=OccluderSegmenter(),
                             synthesizer=FlatSynthesizer(), min_label_coverage=0.05, max_label_edge_gap=1.0,
                             label_segmenter=OBJECT)
    assert not second.ok and "of the labelled object's own pixels" in second.error
    # 5 % coverage alone no longer does: the occluder reaches no side of the circle's box
    (sides,) = run_pipeline([PipelineItem(image, boxes, labels, "a beach")], segmenter=OccluderSegmenter(),
                            synthesizer=FlatSynthesizer(), min_label_coverage=0.05)
    assert not sides.ok and "keeps nothing within 4 px of its left side" in sides.error


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


#: the second opinion of the tests below: the real model-free segmenter, asked at each box on the original
OBJECT = get_registry().create("segmenters", "object")


class MaskSegmenter:
    """Returns the masks it was given, whatever the image: the segmentation a test chooses."""

    def __init__(self, *masks: np.ndarray) -> None:
        self.masks = list(masks)

    def segment(self, images, boxes):
        return [Image.fromarray(np.where(m, 255, 0).astype(np.uint8), "L") for m in self.masks[:len(images)]]


def circle_scene() -> tuple[Image.Image, tuple[int, int, int, int], np.ndarray]:
    """A red circle whose tight box is (10, 10, 50, 50), and the circle's own pixels."""
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    box = toyshapes.draw_shape(image, "circle", (10, 10, 50, 50), "red")
    return image, box, np.asarray(toyshapes.shape_mask("circle", (10, 10, 50, 50), image.size)) > 0


def test_a_wrong_mask_keeping_30_percent_of_the_box_and_a_quarter_of_the_object_fails():
    image, box, circle = circle_scene()
    x1, y1, x2, y2 = box
    wrong = np.zeros(circle.shape, dtype=bool)
    wrong[y1:y1 + 12, x1:x2] = True  # the top 12 of the box's 40 rows: another object's mask, say
    # the numbers, measured: 30 % of the box kept, 75 % of the labelled circle repainted
    assert wrong[y1:y2, x1:x2].mean() == pytest.approx(0.30)
    assert 1 - (wrong & circle).sum() / circle.sum() == pytest.approx(0.75, abs=0.01)
    item = PipelineItem(image, [box], ["red circle"], "a beach")
    (outcome,) = run_pipeline([item], segmenter=MaskSegmenter(wrong), synthesizer=FlatSynthesizer(),
                              label_segmenter=OBJECT)
    assert not outcome.ok and outcome.image is None
    assert "box 0 (10, 10, 50, 50) keeps nothing within 28 px of its bottom side" in outcome.error
    # the coverage share alone (the rule before issue #23) passed it
    (before,) = run_pipeline([item], segmenter=MaskSegmenter(wrong), synthesizer=FlatSynthesizer(),
                             max_label_edge_gap=1.0, min_label_object_coverage=0.0)
    assert before.ok
    # without the sides, the object rule refuses it on its own: a quarter of the circle's pixels kept
    (objects,) = run_pipeline([item], segmenter=MaskSegmenter(wrong), synthesizer=FlatSynthesizer(),
                              max_label_edge_gap=1.0, label_segmenter=OBJECT)
    assert not objects.ok and objects.image is None
    assert "box 0 (10, 10, 50, 50) keeps 25% of the labelled object's own pixels" in objects.error


def test_a_wrong_mask_that_reaches_every_side_of_the_box_fails():
    """A frame along the box's border (another object's outline, a picture frame behind a cup): it reaches all
    four sides and keeps over a third of the box, so the sides and the share pass it with most of the circle
    repainted; the circle's own mask at its box does not."""
    image, box, circle = circle_scene()
    x1, y1, x2, y2 = box
    frame = np.zeros(circle.shape, dtype=bool)
    frame[y1:y2, x1:x2] = True
    frame[y1 + 4:y2 - 4, x1 + 4:x2 - 4] = False
    assert frame[y1:y2, x1:x2].mean() == pytest.approx(0.36)
    repainted = 1 - (frame & circle).sum() / circle.sum()
    assert repainted > 0.75  # 79 % of the circle repainted
    item = PipelineItem(image, [box], ["red circle"], "a beach")
    # the rules before this one pass it (the sides within 0 px, 36 % of the box)
    (before,) = run_pipeline([item], segmenter=MaskSegmenter(frame), synthesizer=FlatSynthesizer(),
                             min_label_object_coverage=0.0)
    assert before.ok
    (outcome,) = run_pipeline([item], segmenter=MaskSegmenter(frame), synthesizer=FlatSynthesizer(),
                              label_segmenter=OBJECT)
    assert not outcome.ok and outcome.image is None
    kept = round(100 * (1 - repainted))
    assert f"box 0 (10, 10, 50, 50) keeps {kept}% of the labelled object's own pixels" in outcome.error
    assert "min_label_object_coverage 80%" in outcome.error


class SalientSegmenter:
    """A stand-in for a whole-image segmenter (BEN2's salient foreground): ignores the boxes and keeps the largest
    one-colour region that is not the image's commonest colour (its background)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def segment(self, images, boxes):
        out = []
        for im in images:
            arr = np.asarray(im.convert("RGB")).astype(np.int32)
            code = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
            values, counts = np.unique(code, return_counts=True)
            background = values[counts.argmax()]
            seen = code == background
            best: list[tuple[int, int]] = []
            h, w = code.shape
            for r0 in range(h):
                for c0 in range(w):
                    if seen[r0, c0]:
                        continue
                    seen[r0, c0] = True
                    region, todo = [], [(r0, c0)]
                    while todo:
                        r, c = todo.pop()
                        region.append((r, c))
                        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                            if 0 <= rr < h and 0 <= cc < w and not seen[rr, cc] and code[rr, cc] == code[r0, c0]:
                                seen[rr, cc] = True
                                todo.append((rr, cc))
                    if len(region) > len(best):
                        best = region
            mask = np.zeros((h, w), dtype=np.uint8)
            for r, c in best:
                mask[r, c] = 255
            out.append(Image.fromarray(mask, "L"))
        return out


def triangle_on_a_table(table: bool = True) -> tuple[Image.Image, tuple[int, int, int, int], np.ndarray]:
    """A red triangle labelled on a large blue table (unlabelled), on a grey floor that is most of the image."""
    image = Image.new("RGB", (128, 96), (200, 200, 200))
    if table:
        image.paste((40, 60, 200), (20, 16, 100, 80))
    box = toyshapes.draw_shape(image, "triangle", (40, 30, 72, 62), "red")
    return image, box, np.asarray(toyshapes.shape_mask("triangle", (40, 30, 72, 62), image.size)) > 0


def test_a_whole_image_segmenter_that_keeps_the_table_behind_the_object_fails():
    """The job's segmenter looks at the whole image and keeps the table: in the triangle's box that is the box
    minus the triangle, which reaches every side and keeps half of the box, so only the object rule sees that
    the triangle is repainted whole.  Asked at the triangle's box (the default label segmenter: the same one),
    the segmenter finds the triangle."""
    image, box, triangle = triangle_on_a_table()
    (seg,) = SalientSegmenter().segment([image], [[box]])
    x1, y1, x2, y2 = box
    kept = np.asarray(seg)[y1:y2, x1:x2] > 0
    assert kept.mean() > 0.4 and not (kept & triangle[y1:y2, x1:x2]).any()  # half the box, none of the triangle
    item = PipelineItem(image, [box], ["red triangle"], "a beach")
    (before,) = run_pipeline([item], segmenter=SalientSegmenter(), synthesizer=FlatSynthesizer(),
                             min_label_object_coverage=0.0)
    assert before.ok  # the sides and the share pass it
    (outcome,) = run_pipeline([item], segmenter=SalientSegmenter(), synthesizer=FlatSynthesizer())
    assert not outcome.ok and outcome.image is None
    assert f"box 0 {tuple(box)} keeps 0% of the labelled object's own pixels" in outcome.error
    # the same segmenter on the triangle alone keeps it, and the job passes
    alone, box, _ = triangle_on_a_table(table=False)
    (ok,) = run_pipeline([PipelineItem(alone, [box], ["red triangle"], "a beach")], segmenter=SalientSegmenter(),
                         synthesizer=FlatSynthesizer())
    assert ok.ok, ok.error


@pytest.mark.parametrize("shape", toyshapes.SHAPES)
def test_every_toy_shape_segmented_right_passes_the_check(shape):
    """A triangle's apex or a star's points are a pixel wide: the object's own mask reaches every side."""
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    box = toyshapes.draw_shape(image, shape, (9, 11, 47, 41), "blue")
    own = np.asarray(toyshapes.shape_mask(shape, (9, 11, 47, 41), image.size)) > 0
    (outcome,) = run_pipeline([PipelineItem(image, [box], [shape], "a beach")], segmenter=MaskSegmenter(own),
                              synthesizer=FlatSynthesizer(), label_segmenter=OBJECT)
    assert outcome.ok, outcome.error


def test_a_gap_of_up_to_a_tenth_of_the_box_passes_and_one_beyond_it_fails():
    image, box, circle = circle_scene()
    x1, y1, x2, y2 = box  # 40 x 40: a tenth is 4 px
    for rows, ok in ((4, True), (5, False)):
        eroded = circle.copy()
        eroded[y2 - rows:y2, :] = False  # the bottom rows lost (a soft matte's edge, a shadow cut off)
        (outcome,) = run_pipeline([PipelineItem(image, [box], ["red circle"], "a beach")],
                                  segmenter=MaskSegmenter(eroded), synthesizer=FlatSynthesizer(),
                                  label_segmenter=OBJECT)
        assert outcome.ok is ok, (rows, outcome.error)
    # a small box keeps a 2-pixel slack whatever the share: a fractional box edge, an anti-aliased border
    small = np.zeros(circle.shape, dtype=bool)
    small[12:18, 12:18] = True
    (outcome,) = run_pipeline([PipelineItem(image, [(10.5, 10.5, 18.0, 18.0)], ["dot"], "a beach")],
                              segmenter=MaskSegmenter(small), synthesizer=FlatSynthesizer(),
                              min_label_object_coverage=0.0)  # a made-up box inside the circle: the sides only
    assert outcome.ok, outcome.error


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


async def test_a_segmenter_that_keeps_the_table_behind_the_object_fails_the_job_on_the_server(aiohttp_client,
                                                                                              config_for):
    registry = get_registry([WrongObjectPlugin()])
    client = await aiohttp_client(create_app(config_for(segmenter="salient", synthesizer="flat"), registry=registry))
    image, box, _ = triangle_on_a_table()
    body = SynthesisJob(key="table", image_png=png_bytes(image), boxes=[box], labels=["red triangle"],
                        description="a beach").to_json()
    resp = await client.post("/v1/jobs", json=body)
    assert resp.status in (200, 201, 202), await resp.text()
    job = await wait_for_state(client, (await resp.json())["id"])
    assert job["state"] == "failed"
    assert "keeps 0% of the labelled object's own pixels" in job["error"]


@pytest.mark.parametrize("task_name, size, options", [
    ("rec", 84, dict(grid=3, position_code=True, n_shapes=(1, 1), relational_prob=0.0)),  # the quickstart's scenes
    ("rec", 112, {}), ("ovd", 112, {}), ("isr", 112, {}),
], ids=["rec-quickstart", "rec", "ovd", "isr"])
def test_good_toy_jobs_pass_the_label_check(task_name, size, options, tmp_path):
    """The `object` segmenter on the toy tasks' own scenes: no job the rule could wrongly fail (docs/data-server.md)."""
    from syngrpo.data.images import load_rgb

    registry = get_registry()
    task = registry.create("tasks", task_name)
    samples = task.make_toy_dataset(tmp_path, n=50, seed=1, split="train", image_size=size, **options)
    items = [PipelineItem(load_rgb(s.image), [tuple(b) for b in task.foreground_boxes(s)],
                          [str(n) for n in range(len(task.foreground_boxes(s)))], "a red room", i)
             for i, s in enumerate(samples)]
    outcomes = run_pipeline(items, segmenter=registry.create("segmenters", "object"),
                            synthesizer=registry.create("synthesizers", "procedural"))
    assert [o.error for o in outcomes if not o.ok] == []


def test_an_unknown_label_segmenter_is_a_start_up_error_and_a_named_one_is_the_second_opinion(config_for):
    from syngrpo.errors import UnknownPluginError
    from syngrpo.synthesis.server.device import DeviceModels, DeviceSpec

    with pytest.raises(UnknownPluginError, match="no segmenter named 'nope'"):
        create_app(config_for(label_segmenter="nope"))
    models = DeviceModels(DeviceSpec.from_config(config_for(segmenter="box", label_segmenter="object"), "cpu"))
    assert type(models.label_segmenter()).__name__ == "ObjectSegmenter" and models.label_segmenter() is not \
        models.segmenter()
    same = DeviceModels(DeviceSpec.from_config(config_for(segmenter="box"), "cpu"))
    assert same.label_segmenter() is same.segmenter()


class _CountingSegmenter:
    """The `object` segmenter, counting its calls; raises for a crop whose image is ``poison`` pixels wide."""

    def __init__(self, poison: int | None = None) -> None:
        self.inner = get_registry().create("segmenters", "object")
        self.calls: list[int] = []
        self.poison = poison

    def segment(self, images, boxes):
        self.calls.append(len(images))
        if self.poison is not None and any(im.width == self.poison for im in images):
            raise ValueError("cannot segment this crop (test)")
        return self.inner.segment(images, boxes)


def test_the_label_segmenter_is_asked_once_for_every_jobs_crops_and_a_failure_stays_with_its_job(tmp_path):
    """One call for the crops of every job of a batch (a GPU segmenter such as SAM batches them; one call per job
    made k sequential calls for k jobs, found in review), and when that call fails, job by job, so only the job
    whose crop it cannot take fails, with the reason."""
    from syngrpo.data.images import load_rgb

    registry = get_registry()
    task = registry.create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path, n=4, seed=1, split="train", image_size=112)
    items = [PipelineItem(load_rgb(s.image), [tuple(b) for b in task.foreground_boxes(s)],
                          [str(n) for n in range(len(task.foreground_boxes(s)))], "a red room", i)
             for i, s in enumerate(samples)]
    boxes = sum(len(it.boxes) for it in items)
    label = _CountingSegmenter()
    outcomes = run_pipeline(items, segmenter=registry.create("segmenters", "object"),
                            synthesizer=registry.create("synthesizers", "procedural"), label_segmenter=label)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert label.calls == [boxes]  # one call, every job's crops

    first_crop = label_crop_width(items[0])
    poisoned = _CountingSegmenter(poison=first_crop)
    outcomes = run_pipeline(items, segmenter=registry.create("segmenters", "object"),
                            synthesizer=registry.create("synthesizers", "procedural"), label_segmenter=poisoned)
    failed = [i for i, o in enumerate(outcomes) if not o.ok]
    assert 0 in failed and "label segmentation failed: ValueError" in outcomes[0].error
    widths = [label_crop_width(it) for it in items]
    assert failed == [i for i, w in enumerate(widths) if w == first_crop]  # the others were checked and passed
    assert poisoned.calls[0] == boxes and len(poisoned.calls) == 1 + len(items)


def label_crop_width(item: PipelineItem) -> int:
    from syngrpo.synthesis.pipeline import _label_crops

    crops, _, _ = _label_crops(item.image, item.boxes)
    return crops[0].width
