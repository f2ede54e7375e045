"""``syngrpo make-tiny`` builds the tiny models offline, deterministically, where asked."""

from __future__ import annotations

import importlib.util
import json

import pytest

from syngrpo.cli import main
from syngrpo.models.tiny_policy import directory_hash


def test_make_tiny_builds_a_loadable_policy_identical_to_the_builders(tmp_path, capsys, tiny_policy_dir):
    assert main(["make-tiny", "--out", str(tmp_path), "--what", "policy", "--seed", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"policy": str(tmp_path / "policy")}
    assert directory_hash(tmp_path / "policy") == directory_hash(tiny_policy_dir)

    from syngrpo.models.policy import load_policy

    assert load_policy(tmp_path / "policy").model_type == "qwen2_5_vl"


def test_make_tiny_can_build_a_qwen2_vl_policy(tmp_path):
    assert main(["make-tiny", "--out", str(tmp_path), "--what", "policy", "--arch", "qwen2_vl"]) == 0
    config = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"


def test_make_tiny_rejects_an_unknown_model_kind(tmp_path, capsys):
    assert main(["make-tiny", "--out", str(tmp_path), "--what", "policy,gpt"]) == 2
    assert "--what" in capsys.readouterr().err
    assert not (tmp_path / "policy").exists()


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers (extra sdxl)")
def test_make_tiny_builds_sdxl_and_sam_with_their_builders(tmp_path):
    from syngrpo.commands.make_tiny import make_tiny

    built = make_tiny(tmp_path, seed=0, what=["sdxl", "sam"])
    assert set(built) == {"sdxl", "sam"}
    for path in built.values():
        assert path.is_dir() and any(path.iterdir())
