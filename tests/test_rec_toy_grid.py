"""The REC toy generator's grid layout and position code (tasks_rec.toy, grid= / position_code=)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks_rec.toy import code_level, make_rec_toy


def test_grid_puts_each_object_alone_in_a_cell_and_centred(tmp_path):
    samples = make_rec_toy(tmp_path, n=20, seed=3, image_size=84, grid=3, n_shapes=(1, 3))
    for s in samples:
        cells = []
        for o in s.meta["objects"]:
            x1, y1, x2, y2 = o["bbox_2d"]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            col, row = int(cx // 28), int(cy // 28)
            cells.append((row, col))
            assert x1 >= col * 28 and x2 <= (col + 1) * 28 and y1 >= row * 28 and y2 <= (row + 1) * 28
            assert abs(cx - (col * 28 + 14)) <= 1.5 and abs(cy - (row * 28 + 14)) <= 1.5
        assert len(set(cells)) == len(cells)


def test_position_code_marks_say_row_and_column_inside_the_target_box(tmp_path):
    samples = make_rec_toy(tmp_path, n=12, seed=5, image_size=84, grid=3, position_code=True, n_shapes=(1, 2))
    for s in samples:
        pixels = np.asarray(Image.open(s.image).convert("RGB")).astype(int)
        x1, y1, x2, y2 = (int(v) for v in s.solution)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        row, col = cy // 28, cx // 28
        upper, lower = pixels[cy - 2, cx], pixels[cy + 2, cx]
        assert tuple(upper) == (code_level(row, 3),) * 3
        assert tuple(lower) == (code_level(col, 3),) * 3


def test_code_levels_are_distinct_greys():
    levels = [code_level(i, 4) for i in range(4)]
    assert levels == sorted(set(levels)) and levels[0] >= 0 and levels[-1] <= 255


def test_position_code_needs_a_grid(tmp_path):
    with pytest.raises(ValueError, match="needs a grid"):
        make_rec_toy(tmp_path, n=1, seed=0, position_code=True)


def test_grid_layout_is_deterministic_and_boxes_match_labels(tmp_path):
    a = make_rec_toy(tmp_path / "a", n=5, seed=9, image_size=112, grid=4, position_code=True)
    b = make_rec_toy(tmp_path / "b", n=5, seed=9, image_size=112, grid=4, position_code=True)
    assert [s.solution for s in a] == [s.solution for s in b]
    assert all(s.solution == [float(v) for v in s.meta["objects"][s.meta["target"]]["bbox_2d"]] for s in a)
