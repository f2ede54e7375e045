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
    plugin = tmp_path / "failing_plugin.py"
    plugin.write_text("from syngrpo.hookspecs import hookimpl\n\n\nclass Failing:\n    def synthesize(self, requests):\n"
                      "        raise RuntimeError('out of paint')\n\n\n@hookimpl\ndef register_synthesizers(register):\n"
                      "    register('failing', lambda **options: Failing())\n")
    code = main(["synth", str(path), "--box", box_arg(RED_BOX), "-d", "x", "--synthesizer", "failing",
                 "--set", f"plugins=[{plugin}]", "-o", str(tmp_path / "o.png")])
    assert code == 1
    err = capsys.readouterr().err
    assert "synthesis failed" in err and "out of paint" in err
    assert not (tmp_path / "o.png").exists()


def test_synth_refuses_job_options_out_of_the_synthesizers_bounds_before_loading_it(tmp_path, capsys):
    """The data server answers such a job 422; the one-image command says the same, with the bound."""
    path, _, _, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", box_arg(RED_BOX), "-d", "x", "--options", '{"distractors": -1}',
                 "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert "--options: synthesizer 'procedural': options.distractors: Input should be greater than or equal to 0" \
        in capsys.readouterr().err


RECORDER = '''
import json
from PIL import Image
from syngrpo.hookspecs import hookimpl

OUT = {out!r}


class Recorder:
    def __init__(self, **options):
        with open(OUT, "w") as f:
            json.dump(options, f)

    def synthesize(self, requests):
        return [Image.new("RGB", r.image.size, (40, 90, 40)) for r in requests]


@hookimpl
def register_synthesizers(register):
    register("recorder", Recorder)
'''


def test_set_synthesizer_options_reach_the_synthesizer_named_by_the_flag(tmp_path, capsys):
    """`--synthesizer X --set synthesizer_options...` used to drop the options (they went to the config's own
    synthesizer); the sdxl one then tried the hub for 30 s and printed a traceback (issue #25)."""
    path, _, boxes, _ = write_scene(tmp_path)
    seen = tmp_path / "options.json"
    plugin = tmp_path / "recorder_plugin.py"
    plugin.write_text(RECORDER.format(out=str(seen)))
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "-d", "a lawn", "-o", str(tmp_path / "o.png"),
                 "--synthesizer", "recorder", "--set", f"plugins=[{plugin}]",
                 "--set", "synthesizer_options={flavour: mint, layers: 2}", "--set", "synthesizer_options.layers=3"])
    assert code == 0, capsys.readouterr().err
    import json

    assert json.loads(seen.read_text()) == {"flavour": "mint", "layers": 3, "device": "cpu"}


def test_a_set_that_one_image_synth_does_not_use_is_an_error_naming_the_key(tmp_path, capsys):
    path, _, boxes, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "-d", "x", "-o", str(tmp_path / "o.png"),
                 "--set", "queue_size=4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--set queue_size=4" in err and "does not use 'queue_size'" in err and "synthesizer_options" in err
    assert not (tmp_path / "o.png").exists()


def test_a_synthesizer_that_does_not_load_is_one_clear_error_not_a_traceback(tmp_path, capsys):
    path, _, boxes, _ = write_scene(tmp_path)
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "-d", "x", "-o", str(tmp_path / "o.png"),
                 "--synthesizer", "sdxl_controlnet", "--set",
                 f"synthesizer_options={{model: {tmp_path / 'missing'}, controlnet: null, local_files_only: true}}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "synthesizer 'sdxl_controlnet' with options" in err and "did not load" in err
    assert "syngrpo make-tiny --what sdxl" in err and "Traceback" not in err


def test_sdxl_takes_a_per_job_size_and_says_what_a_cpu_run_costs(tmp_path, capsys, tiny_sdxl_dir):
    """A per-job ``size`` was refused; on a CPU the default 1024 px x 30 steps takes minutes even for the tiny
    model, so the command says so and how to make it seconds."""
    path, image, boxes, _ = write_scene(tmp_path)
    opts = f"synthesizer_options={{model: {tiny_sdxl_dir}, controlnet: null, local_files_only: true}}"
    out = tmp_path / "o.png"
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "-d", "a beach", "-o", str(out), "--result",
                 str(tmp_path / "r.png"), "--synthesizer", "sdxl_controlnet", "--set", opts,
                 "--options", '{"size": 128, "steps": 2}'])
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "r.png").size == image.size
    assert "sdxl_controlnet on cpu with size 128, 2 steps" in capsys.readouterr().err
    code = main(["synth", str(path), "--box", box_arg(boxes[0]), "-d", "a beach", "-o", str(out),
                 "--synthesizer", "sdxl_controlnet", "--set", opts, "--options", '{"size": 9000}'])
    assert code == 2 and "options.size" in capsys.readouterr().err
    from syngrpo_sdxl.outpaint import SDXLControlNetSynthesizer

    assert "size" in SDXLControlNetSynthesizer.__init__.__kwdefaults__
