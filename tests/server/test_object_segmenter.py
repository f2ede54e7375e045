"""The ``object`` segmenter: synthesized toy images keep the objects' own pixels, not rectangles of old background.

The scenes are drawn here with the toy generator's helpers, so each test knows every object's own
pixels (``toyshapes.shape_mask``); the segmenter only sees the image and the labelled boxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from syngrpo.perception import toyshapes
from syngrpo.plugins import get_registry
from syngrpo.synthesis.pipeline import PipelineItem, Segmenter, boxes_mask, run_pipeline


def toy_scene(style: str, seed: int = 0, position_code: bool = False, grid: int = 0):
    """(image, exact boxes, labels, the union of the objects' own pixels) of a toy scene in ``style``.

    Drawn as ``tasks_rec.toy.make_rec_toy`` draws: every shape once, at free positions (``grid=0``,
    112 px) or in the cells of a grid of 28-pixel cells, with the position marks inside each
    object when ``position_code`` (grid only; the marks are part of the object's own pixels).
    """
    from tasks_rec.toy import draw_position_code, grid_boxes

    rng = toyshapes.scene_rng(seed, "object-seg", style, grid)
    size = 28 * grid if grid else 112
    colours = list(toyshapes.COLOURS)
    if grid:
        placements = grid_boxes(rng, min(len(toyshapes.SHAPES), grid * grid - 1), grid, size)
    else:
        placements = toyshapes.place_boxes(rng, rng.integers(16, 27, size=len(toyshapes.SHAPES)), size, size, gap=3)
    assert placements is not None
    specs = [toyshapes.ShapeSpec(shape, colours[(i + seed) % len(colours)], box)
             for i, (shape, box) in enumerate(zip(toyshapes.SHAPES, placements, strict=False))]
    image, drawn = toyshapes.render_scene(specs, size, size, rng, style=style)
    own = np.zeros((size, size), dtype=bool)
    for spec in specs:
        own |= np.asarray(toyshapes.shape_mask(spec.shape, spec.box, (size, size))) > 0
    if position_code:  # grey marks inside each object, some of them close to the background's own grey
        marks = Image.new("RGB", (size, size), (0, 0, 0))
        for d in drawn:
            draw_position_code(image, d.bbox, grid, size)
            draw_position_code(marks, d.bbox, grid, size)
        own |= np.asarray(marks).max(axis=-1) > 0  # every code level is >= 20
    return image, [tuple(float(v) for v in d.bbox) for d in drawn], [d.label for d in drawn], own


def synthesize(image, boxes, labels, segmenter="object", description="a purple striped wall"):
    seg = get_registry().create("segmenters", segmenter)
    synth = get_registry().create("synthesizers", "procedural")
    (outcome,) = run_pipeline([PipelineItem(image, boxes, labels, description, 7)], segmenter=seg,
                              synthesizer=synth)
    assert outcome.ok, outcome.error
    return outcome


@pytest.mark.parametrize("style", ["plain", "cluttered"])
@pytest.mark.parametrize("grid", [0, 3, 4])
def test_synthesized_toy_image_keeps_exactly_the_objects_own_pixels(style, grid):
    image, boxes, labels, own = toy_scene(style, position_code=bool(grid), grid=grid)
    outcome = synthesize(image, boxes, labels)
    keep = np.asarray(outcome.keep_mask) > 0
    inside = np.asarray(boxes_mask(boxes, image.size)) > 0
    old_background = inside & ~own  # what the box segmenter would keep besides the objects
    assert old_background.sum() > 0.2 * inside.sum()  # the test can see the difference
    assert (keep & own).sum() == own.sum()  # every object pixel kept, the position marks too
    assert (keep & old_background).sum() <= 0.03 * old_background.sum()  # no rectangle of old background
    original, result = np.asarray(image), np.asarray(outcome.image)
    assert np.array_equal(result[own], original[own])
    repainted = old_background & ~keep
    assert (result[repainted] != original[repainted]).any(axis=-1).mean() > 0.9  # the corners got new pixels


def test_the_box_segmenter_keeps_the_rectangle_the_object_segmenter_drops():
    """The measurement above fails for the ``box`` segmenter: it is what the object segmenter fixes."""
    image, boxes, labels, own = toy_scene("plain")
    keep = np.asarray(synthesize(image, boxes, labels, segmenter="box").keep_mask) > 0
    old_background = (np.asarray(boxes_mask(boxes, image.size)) > 0) & ~own
    assert (keep & old_background).sum() == old_background.sum()


def test_on_textured_backgrounds_most_of_the_old_background_goes():
    image, boxes, labels, own = toy_scene("textured", seed=1)
    keep = np.asarray(synthesize(image, boxes, labels).keep_mask) > 0
    old_background = (np.asarray(boxes_mask(boxes, image.size)) > 0) & ~own
    assert (keep & own).sum() == own.sum()
    assert (keep & old_background).sum() <= 0.15 * old_background.sum()


def test_an_object_that_looks_like_its_surroundings_keeps_its_whole_box():
    """The minimum-coverage fallback: nothing stands out, so the labelled box is kept rather than repainted."""
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    toyshapes.draw_shape(image, "circle", (20, 20, 40, 40), (203, 202, 199))  # within the tolerance
    box = (20.0, 20.0, 40.0, 40.0)
    seg = get_registry().create("segmenters", "object")
    assert isinstance(seg, Segmenter)
    (mask,) = seg.segment([image], [[box]])
    assert np.array_equal(np.asarray(mask), np.asarray(boxes_mask([box], image.size)))


def test_a_mark_inside_an_object_in_the_backgrounds_own_colour_stays_with_the_object():
    image = Image.new("RGB", (64, 64), (230, 228, 225))
    toyshapes.draw_shape(image, "square", (20, 20, 40, 40), "red")
    image.paste((230, 228, 225), (27, 27, 33, 33))  # a hole of background colour, enclosed by the object
    (mask,) = get_registry().create("segmenters", "object").segment([image], [[(20.0, 20.0, 40.0, 40.0)]])
    assert np.array_equal(np.asarray(mask), np.asarray(boxes_mask([(20, 20, 40, 40)], image.size)))


def test_a_box_that_fills_the_image_reads_the_background_from_its_own_border():
    image = Image.new("RGB", (40, 40), (230, 230, 230))
    toyshapes.draw_shape(image, "diamond", (8, 8, 32, 32), "purple")
    own = np.asarray(toyshapes.shape_mask("diamond", (8, 8, 32, 32), (40, 40))) > 0
    (mask,) = get_registry().create("segmenters", "object").segment([image], [[(0.0, 0.0, 40.0, 40.0)]])
    assert np.array_equal(np.asarray(mask) > 0, own)


def test_object_segmenter_options_are_checked():
    registry = get_registry()
    with pytest.raises(ValueError, match="tolerance"):
        registry.create("segmenters", "object", tolerance=300)
    with pytest.raises(ValueError, match="min_coverage"):
        registry.create("segmenters", "object", min_coverage=2)
