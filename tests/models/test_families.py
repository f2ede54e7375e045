"""Model families as plugins: every built-in family keeps the contract on its tiny model, and the box frames of
0-1000 relative and pixel families meet at the same original-image box."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from syngrpo.errors import ConfigError
from syngrpo.models.family import CoordinateConvention, get_family
from syngrpo.models.policy import encode_prompts, load_policy
from syngrpo.perception.geometry import iou
from syngrpo.testing import ContractError, check_family_contract

BUILTIN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v", "internvl")
#: the patch-grid families (3-D positions: shared-prefix scoring applies)
PATCH_GRID = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    """One tiny model per built-in family, built once per session (~0.2 s each after the first)."""
    root = tmp_path_factory.mktemp("families")
    return {name: Path(get_family(name).build_tiny(root / name, seed=0)) for name in BUILTIN}


@pytest.fixture(scope="session")
def family_bundles(family_dirs):
    return {name: load_policy(path) for name, path in family_dirs.items()}


def test_syngrpo_plugins_json_lists_the_model_families(capsys):
    from syngrpo.cli import main

    assert main(["plugins", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)["model_families"]}
    assert set(BUILTIN) <= set(listed)
    assert listed["glm4v"]["distribution"] == "syngrpo"  # through the entry point, like any plugin


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_family_keeps_the_family_contract(name, family_dirs, tmp_path):
    report = check_family_contract(get_family(name), tmp_path, model_dir=family_dirs[name])
    assert report.checked[-2] == "save/load" and len(report.checked) == 7
    # every built-in family takes several images per prompt (each processor's replace_image_token counts images
    # across the batch), and scores a two-image prompt as it samples it
    assert report.checked[-1].startswith("several images")
    assert "two images, naive" in report.logprob_error
    assert max(report.logprob_error.values()) < 1e-5
    # the patch-grid VLMs (3-D positions) score through the shared prefix too; InternVL (1-D) does not
    assert ("shared-prefix" in report.logprob_error) == (name in PATCH_GRID)
    assert ("two images, shared-prefix" in report.logprob_error) == (name in PATCH_GRID)


@pytest.mark.parametrize("name", BUILTIN)
def test_auto_picks_the_family_from_the_checkpoint_config(name, family_bundles):
    bundle = family_bundles[name]
    assert bundle.family.name == name and bundle.family.recognises(bundle.model_type)


def test_a_family_that_does_not_read_the_checkpoint_is_a_config_error(family_dirs):
    with pytest.raises(ConfigError, match="model.family is 'glm4v'"):
        load_policy(family_dirs["qwen3_vl"], family="glm4v")


def test_relative_and_pixel_answers_all_map_to_the_same_original_box(family_bundles):
    """Qwen2-VL, Qwen3-VL and InternVL write 0-1000 of the image, Qwen2.5-VL pixels of its resized image: one label."""
    from PIL import Image

    w, h = 200, 100
    label = (50.0, 20.0, 150.0, 80.0)
    image = Image.new("RGB", (w, h), (200, 200, 200))
    relative = [label[0] / w * 1000, label[1] / h * 1000, label[2] / w * 1000, label[3] / h * 1000]  # 250,200,750,800
    answers = {"qwen2_vl": relative, "qwen3_vl": relative, "internvl": relative}
    b25 = encode_prompts(family_bundles["qwen2_5_vl"], [image], ["Locate it."])
    grid = b25.image_grid_thw[0].tolist()
    rw, rh = grid[2] * 14, grid[1] * 14  # the processor's resize: 196 x 112, not 200 x 100
    assert (rw, rh) != (w, h)
    answers["qwen2_5_vl"] = [label[0] * rw / w, label[1] * rh / h, label[2] * rw / w, label[3] * rh / h]
    back = {}
    for name, answer in answers.items():
        frame = encode_prompts(family_bundles[name], [image], ["Locate it."]).frames[0]
        back[name] = frame.inverse(w, h).box(answer)
        assert iou(back[name], label) == pytest.approx(1.0, abs=1e-9), name
    # and the same answer read in the wrong convention is far off: the frames really differ
    wrong = encode_prompts(family_bundles["qwen2_5_vl"], [image], ["Locate it."]).frames[0].inverse(w, h).box(relative)
    assert iou(wrong, label) < 0.5


def test_the_contract_catches_an_engine_that_samples_suppressed_tokens(family_dirs, tmp_path, monkeypatch):
    from syngrpo_hf.engine import HFRolloutEngine

    original = HFRolloutEngine.generation_config

    def without_suppression(self, bundle, **kwargs):
        cfg = original(self, bundle, **kwargs)
        cfg.suppress_tokens = None
        return cfg

    monkeypatch.setattr(HFRolloutEngine, "generation_config", without_suppression)
    with pytest.raises(ContractError, match="suppressed token"):
        check_family_contract(get_family("qwen3_vl"), tmp_path, model_dir=family_dirs["qwen3_vl"])


def test_the_contract_catches_a_frame_that_ignores_the_declared_convention(family_dirs, tmp_path):
    family = get_family("qwen2_vl")
    family.answer_frame = lambda input_frame: input_frame  # writes pixels while it says 0-1000
    with pytest.raises(ContractError, match="coordinates"):
        check_family_contract(family, tmp_path, model_dir=family_dirs["qwen2_vl"])


def test_coordinate_conventions_compose_with_the_processor_resize():
    from syngrpo.perception.geometry import ImageTransform

    resize = ImageTransform.resize(200, 100, 196, 112)
    rel = CoordinateConvention("relative", 1000).answer_frame(resize)
    assert (rel.width, rel.height) == (1000, 1000)
    assert rel.box((200, 100, 200, 100)) == pytest.approx((1000, 1000, 1000, 1000))
    assert CoordinateConvention("pixels").answer_frame(resize) == resize


def test_tiny_cache_directory_differs_per_family():
    from syngrpo.config import ModelConfig

    dirs = {f: ModelConfig(policy="tiny", family=f).resolved_tiny_dir() for f in ("auto", *BUILTIN)}
    assert dirs["auto"] == dirs["qwen2_5_vl"] and dirs["auto"].name == "tiny-policy-seed0"
    assert len({dirs[f] for f in BUILTIN}) == len(BUILTIN)


def test_make_tiny_family_builds_that_family(tmp_path, capsys):
    from syngrpo.cli import main

    assert main(["make-tiny", "--out", str(tmp_path), "--what", "policy", "--family", "glm4v"]) == 0
    assert json.loads((tmp_path / "policy" / "config.json").read_text())["model_type"] == "glm4v"
    assert load_policy(tmp_path / "policy").family.name == "glm4v"


def test_make_tiny_unknown_family_names_the_installed_ones(tmp_path, capsys):
    from syngrpo.cli import main

    assert main(["make-tiny", "--out", str(tmp_path), "--what", "policy", "--family", "llava"]) != 0
    err = capsys.readouterr().err
    assert "glm4v" in err and "qwen3_vl" in err
    assert not (tmp_path / "policy").exists()


def test_the_core_branches_on_no_model_type():
    """Family knowledge lives in the family plugins: the core never compares a model type by name."""
    offenders = []
    for path in (ROOT / "syngrpo").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"model_type\s*(==|!=|in\s*\(|not in)", text) or "syngrpo_families" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_glm_tiny_answers_end_at_its_own_end_of_turn(family_bundles):
    bundle = family_bundles["glm4v"]
    vocab = bundle.tokenizer.get_vocab()
    assert bundle.eos_token_ids[0] == vocab["<|user|>"]
    assert vocab["<|image|>"] in bundle.suppress_token_ids and vocab["<|begin_of_image|>"] in bundle.suppress_token_ids
    text = bundle.model.config.text_config
    rope = text.rope_parameters
    head_dim = text.hidden_size // text.num_attention_heads
    # GLM rotates only part of each head: the mrope sections split the rotary half of that part
    assert math.isclose(sum(rope["mrope_section"]), head_dim * rope["partial_rotary_factor"] / 2)


def test_an_internvl_grounding_answer_scores_one_on_the_original_image(family_bundles):
    """InternVL writes ``<ref>..</ref><box>[[x1,y1,x2,y2]]</box>`` in 0-1000 of the image (its RefCOCO evaluation
    divides by 1000 and multiplies by W, H); through the prompt's frame the REC reward reads it as the label."""
    from PIL import Image

    from syngrpo.plugins import get_registry
    from syngrpo.types import Sample

    w, h = 200, 100
    image = Image.new("RGB", (w, h), (90, 90, 90))
    frame = encode_prompts(family_bundles["internvl"], [image], ["Locate the cat."]).frames[0]
    task = get_registry().create("tasks", "rec")
    sample = Sample(id="s", task="rec", image="x.jpg", problem="Locate the cat.", solution=[50.0, 20.0, 150.0, 80.0],
                    width=w, height=h)
    answer = "<ref>the cat</ref><box>[[250, 200, 750, 800]]</box>"
    assert task.accuracy(task.parse_answer(answer), sample, frame=frame) == pytest.approx(1.0)
    assert task.accuracy(task.parse_answer("<box>[[50, 20, 150, 80]]</box>"), sample, frame=frame) < 0.2  # pixels


def test_internvl_tiles_follow_the_pixel_budget_and_their_prompt(family_dirs):
    """``model.max_pixels`` is a tile count (pixels / 32²) for InternVL; each prompt's pixel rows stay with it."""
    from PIL import Image

    wide, square = Image.new("RGB", (400, 100), (200, 0, 0)), Image.new("RGB", (40, 40), (0, 200, 0))
    own = encode_prompts(load_policy(family_dirs["internvl"]), [wide, square], ["a", "b"])
    assert own.image_grid_thw.tolist() == [[5, 1, 4], [1, 1, 1]]  # 4 x 1 tiles + the thumbnail; one tile
    assert own.pixel_values.shape[0] == 6
    small = encode_prompts(load_policy(family_dirs["internvl"], max_pixels=2 * 32 * 32), [wide, square], ["a", "b"])
    assert small.image_grid_thw.tolist() == [[3, 1, 2], [1, 1, 1]]
    assert (small.input_frames[0].width, small.input_frames[0].height) == (64, 32)
    override = encode_prompts(load_policy(family_dirs["internvl"]), [wide], ["a"], max_pixels=2 * 32 * 32)
    assert override.image_grid_thw.tolist() == [[3, 1, 2]] and override.input_frames[0].width == 64
    second = own.select([1, 0])
    assert second.image_grid_thw.tolist() == [[1, 1, 1], [5, 1, 4]]
    assert torch_equal(second.pixel_values[0], own.pixel_values[5]) and torch_equal(second.pixel_values[1:],
                                                                                     own.pixel_values[:5])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
