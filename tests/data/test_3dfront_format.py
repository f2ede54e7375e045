"""3D-FRONT scenes as ISR records: footprints projected by hand, rotations in ISR's convention, schematic views."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from syngrpo.data.formats import DatasetError, read_format, write_converted
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from tasks_isr.formats import yaw_of
from tasks_isr.rotation import facing_vector
from tests.data import fixtures

REG = get_registry()
ROOM = "0003d406-5f27-4bbf-94cd-1cff7c310ba1/Bedroom-3921"


def _cameras(tmp_path, size=56):
    """A user's top view: the room centred at world (0, 0), 10 pixels per metre, x right and z down."""
    renders = tmp_path / "renders"
    fixtures.image(renders / "bedroom.png", size=(size, size))
    (renders / "cameras.json").write_text(json.dumps({ROOM: {"image": "bedroom.png", "center": [0, 0],
                                                             "pixels_per_meter": 10}}))
    return renders


def test_footprints_project_onto_the_users_top_view_as_worked_out_by_hand(tmp_path):
    scenes = fixtures.write_3dfront(tmp_path)
    result = read_format(REG, "3dfront", scenes, options={"renders": str(_cameras(tmp_path))})
    (room,) = result.records
    objects = {o["label"]: o for o in room["objects"]}
    # bed 1.8 x 2.0 m at (-1, 1), yaw 0: x in [-1.9, -0.1], z in [0, 2] -> pixels (x * 10 + 28, z * 10 + 28)
    assert objects["king-size bed"]["bbox_2d"] == pytest.approx([9, 28, 27, 48], abs=0.01)
    assert objects["king-size bed"]["rotation"] == 0  # facing +z: the bottom of the image
    # wardrobe 1.2 x 0.6 m at (2, -1) turned 90 degrees: its width now runs along z
    assert objects["wardrobe"]["bbox_2d"] == pytest.approx([45, 12, 51, 24], abs=0.01)
    assert objects["wardrobe"]["rotation"] == 270  # yaw +90 turns +z to +x: it faces right, ISR's 270
    chair = objects["dining chair"]
    half = 0.25 * (math.cos(math.radians(37)) + math.sin(math.radians(37))) * 10  # a turned square's half extent
    assert chair["bbox_2d"] == pytest.approx([8 + 28 - half, -18 + 28 - half, 8 + 28 + half, -18 + 28 + half], abs=0.01)
    assert chair["rotation"] == pytest.approx(323)
    fx, fy = facing_vector(chair["rotation"])  # ISR's facing vector is the model's +z turned by the yaw
    assert (fx, fy) == pytest.approx((math.sin(math.radians(37)), math.cos(math.radians(37))))
    assert room["render"] == "user" and any("1 room(s) left out: no furniture" in n for n in result.notes)


def test_schematic_top_views_show_each_footprint_in_its_box(tmp_path):
    scenes = fixtures.write_3dfront(tmp_path)
    result = read_format(REG, "3dfront", scenes, options={"image_size": 112}, workdir=tmp_path / "out")
    (room,) = result.records
    pixels = np.array(Image.open(room["image"]).convert("RGB"))
    assert pixels.shape == (112, 112, 3) and room["render"] == "schematic"
    for obj in room["objects"]:
        x1, y1, x2, y2 = obj["bbox_2d"]
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        assert tuple(pixels[cy, cx]) != (205, 200, 190), obj  # furniture painted over the floor at its centre
        assert 0 <= x1 < x2 <= 112 and 0 <= y1 < y2 <= 112
    samples = REG.create("tasks", "isr").load(write_converted(result, tmp_path / "out" / "rooms.jsonl"))
    assert len(samples[0].solution) == 3 and samples[0].width == 112


def test_quaternions_that_tilt_are_refused_and_yaw_reads_back():
    assert yaw_of(fixtures.yaw_quaternion(37)) == pytest.approx(math.radians(37))
    with pytest.raises(ValueError, match="not a rotation about the up axis"):
        yaw_of([0.7, 0, 0, 0.7])


def test_every_bad_child_is_named_with_room_and_child_number(tmp_path):
    scenes = fixtures.write_3dfront(tmp_path, bad=True)
    with pytest.raises(DatasetError) as err:
        read_format(REG, "3dfront", scenes, workdir=tmp_path / "out")
    text = str(err.value)
    assert "room 1 (Bedroom-3921) child 5 (jid sofa-404): model_info.json has no entry for it" in text
    assert "--option missing_models=skip" in text
    assert "room 1 (Bedroom-3921) child 6 (jid chair-1): has an unreadable pose" in text
    with pytest.raises(DatasetError, match=r"has 1 bad record\(s\)"):  # skipping missing models keeps the tilt an error
        read_format(REG, "3dfront", scenes, workdir=tmp_path / "out2", options={"missing_models": "skip"})


def test_without_a_place_for_schematic_views_the_reader_says_what_to_pass(tmp_path):
    scenes = fixtures.write_3dfront(tmp_path)
    with pytest.raises(ConfigError, match="renders=DIR"):
        read_format(REG, "3dfront", scenes)
