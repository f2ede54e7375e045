"""Boxes follow images: ImageTransform maps, compositions, inverses and clipping; IoU by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syngrpo.perception.geometry import ImageTransform, box_area, iou, valid_box

coords = st.floats(min_value=-500, max_value=500, allow_nan=False)
scales = st.floats(min_value=0.1, max_value=10)


def _close(a, b, tol=1e-9):
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b, strict=True))


# ---- hand cases of each transform ---------------------------------------------------------


def test_resize_scales_each_axis_by_its_own_factor():
    t = ImageTransform.resize(100, 50, 200, 200)
    assert t.box((10, 10, 50, 25)) == (20.0, 40.0, 100.0, 100.0)
    assert (t.width, t.height) == (200, 200)


def test_pad_shifts_boxes_by_the_left_and_top_padding():
    t = ImageTransform.pad(100, 80, left=7, top=3, right=1, bottom=2)
    assert t.box((0, 0, 10, 10)) == (7.0, 3.0, 17.0, 13.0)
    assert (t.width, t.height) == (108, 85)


def test_crop_moves_the_origin_and_clips_what_falls_outside():
    t = ImageTransform.crop(20, 10, 60, 50)
    assert t.box((30, 20, 40, 30)) == (10.0, 10.0, 20.0, 20.0)
    assert t.box((0, 0, 30, 30)) == (0.0, 0.0, 10.0, 20.0)  # clipped to the 40 x 40 crop
    assert t.box((0, 0, 30, 30), clip=False) == (-20.0, -10.0, 10.0, 20.0)


def test_paste_places_the_source_at_its_offset_on_the_canvas():
    t = ImageTransform.paste(32, 16, 256, 256)
    assert t.box((0, 0, 64, 64)) == (32.0, 16.0, 96.0, 80.0)


def test_a_box_entirely_outside_the_frame_clips_to_zero_area():
    t = ImageTransform.crop(0, 0, 50, 50)
    assert box_area(t.box((60, 60, 80, 80))) == 0.0


def test_unbounded_frames_never_clip():
    t = ImageTransform(sx=2.0, sy=2.0)
    assert t.box((-10, -10, 1000, 1000)) == (-20.0, -20.0, 2000.0, 2000.0)


def test_negative_scale_keeps_corners_ordered():
    flip = ImageTransform(sx=-1.0, tx=100.0, width=100, height=100)
    assert flip.box((10, 0, 30, 5)) == (70.0, 0.0, 90.0, 5.0)


def test_zero_scale_has_no_inverse():
    with pytest.raises(ValueError, match="no inverse"):
        ImageTransform(sx=0.0).inverse()


def test_uniformity_tells_when_angles_survive():
    assert ImageTransform.resize(100, 100, 50, 50).is_uniform
    assert not ImageTransform.resize(100, 100, 50, 60).is_uniform


# ---- round trips and composition -----------------------------------------------------------


@given(x1=coords, y1=coords, w=st.floats(0, 300), h=st.floats(0, 300), sx=scales, sy=scales,
       tx=coords, ty=coords)
def test_a_transform_then_its_inverse_gives_the_box_back(x1, y1, w, h, sx, sy, tx, ty):
    box = (x1, y1, x1 + w, y1 + h)
    t = ImageTransform(sx, sy, tx, ty)
    back = t.inverse().box(t.box(box, clip=False), clip=False)
    assert _close(back, box, tol=1e-6)


@given(x1=coords, y1=coords, w=st.floats(0, 300), h=st.floats(0, 300), a=scales, b=scales,
       tx=coords, ty=coords)
def test_then_equals_applying_one_transform_after_the_other(x1, y1, w, h, a, b, tx, ty):
    box = (x1, y1, x1 + w, y1 + h)
    first = ImageTransform(a, b, tx, ty)
    second = ImageTransform(b, a, -ty, tx)
    both = first.then(second)
    assert _close(both.box(box, clip=False), second.box(first.box(box, clip=False), clip=False), tol=1e-6)


def test_resize_pad_crop_chain_composes_into_one_map_with_the_last_frame_size():
    chain = (ImageTransform.resize(100, 100, 200, 200)
             .then(ImageTransform.pad(200, 200, 10, 20, 0, 0))
             .then(ImageTransform.crop(10, 20, 110, 120)))
    assert (chain.width, chain.height) == (100, 100)
    assert chain.box((10, 10, 40, 30)) == (20.0, 20.0, 80.0, 60.0)


def test_inverse_with_source_size_clips_a_model_frame_box_to_the_original_image():
    to_model = ImageTransform.resize(100, 50, 224, 224)
    back = to_model.inverse(100, 50)
    assert back.box((0, 0, 300, 300)) == (0.0, 0.0, 100.0, 50.0)


def test_a_box_predicted_on_the_resized_image_maps_back_exactly():
    gt = (12.0, 7.0, 40.0, 33.0)
    to_model = ImageTransform.resize(64, 48, 448, 336)  # x7 both ways
    predicted = to_model.box(gt)
    assert predicted == (84.0, 49.0, 280.0, 231.0)
    assert iou(to_model.inverse(64, 48).box(predicted), gt) == pytest.approx(1.0)


# ---- IoU ---------------------------------------------------------------------------------


def test_iou_of_identical_boxes_is_one():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def test_iou_of_disjoint_boxes_is_zero():
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_iou_of_boxes_touching_at_an_edge_is_zero():
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


def test_iou_of_half_overlapping_squares_is_one_third():
    # intersection 5 x 10 = 50; union 100 + 100 - 50 = 150
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_iou_of_a_box_inside_another_is_the_area_ratio():
    assert iou((0, 0, 10, 10), (2, 2, 7, 7)) == pytest.approx(25 / 100)


def test_iou_of_an_empty_box_is_zero():
    assert iou((5, 5, 5, 5), (0, 0, 10, 10)) == 0.0


@given(a=st.tuples(coords, coords, coords, coords), b=st.tuples(coords, coords, coords, coords))
def test_iou_is_symmetric_and_within_zero_and_one(a, b):
    assert 0.0 <= iou(a, b) <= 1.0
    assert iou(a, b) == pytest.approx(iou(b, a))


def test_valid_box_wants_four_finite_ordered_numbers():
    assert valid_box([0, 0, 1, 1])
    assert valid_box((0.5, 0.5, 0.5, 0.5))
    assert not valid_box([1, 0, 0, 1])
    assert not valid_box([0, 0, 1])
    assert not valid_box([0, 0, float("nan"), 1])
    assert not valid_box("abcd")
    assert not valid_box(None)
