"""``syngrpo synth``: one synthesis to files, original | mask | result side by side."""

from __future__ import annotations

import numpy as np
from PIL import Image

from syngrpo.cli import main

from .support import RED_BOX, scene


def write_scene(tmp_path):
    image, boxes, labels = scene()
    path = tmp_path / "in.png"
    image.save(path)
    return path, image, boxes, labels


def box_arg(box) -> str:
    return ",".join(str(v) for v in box)


def test_synth_writes_original_mask_and_result_side_by_side_with_the_labels_kept(tmp_path, capsys):
    path, image, boxes, labels = write_scene(tmp_path)
    out, result_path, mask_path = tmp_path / "sbs.png", tmp_path / "result.png", tmp_path / "mask.png"
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "--label", labels[0], "--box", box_arg(boxes[1]),
                 "--label", labels[1], "-d", "a purple dotted carpet", "--seed", "4", "-o", str(out),
                 "--result", str(result_path), "--mask", str(mask_path)])
    assert code == 0, capsys.readouterr().err
    w, h = image.size
    panels = Image.open(out).convert("RGB")
    assert panels.size == (3 * w + 2 * 4, h)
    arr = np.asarray(panels)
    left, middle, right = arr[:, :w], arr[:, w + 4: 2 * w + 4], arr[:, 2 * w + 8:]
    assert np.array_equal(left, np.asarray(image))
    keep = middle[..., 0] > 127
    assert np.array_equal(keep, np.asarray(Image.open(mask_path)) > 127)
    assert keep.any() and np.array_equal(right[keep], np.asarray(image)[keep])
    assert np.array_equal(right, np.asarray(Image.open(result_path).convert("RGB")))
    assert "procedural + box" in capsys.readouterr().out


def test_synth_refuses_a_box_outside_the_image(tmp_path, capsys):
    path, image, _, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", f"0,0,{image.width + 10},10", "-d", "x", "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert "outside the" in capsys.readouterr().err


def test_synth_names_the_installed_synthesizers_for_an_unknown_one(tmp_path, capsys):
    path, _, _, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", box_arg(RED_BOX), "-d", "x", "--synthesizer", "imagen",
                 "-o", str(tmp_path / "o.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no synthesizer named 'imagen'" in err and "procedural" in err


def test_synth_reports_a_failed_synthesis_with_exit_code_1(tmp_path, capsys):
    path, _, _, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", box_arg(RED_BOX), "-d", "x", "--options", '{"distractors": -1}',
                 "-o", str(tmp_path / "o.png")])
    assert code == 1
    assert "synthesis failed" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
