"""``syngrpo make-tiny`` builds the tiny models offline, deterministically, where asked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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


def test_make_tiny_builds_the_tiny_models_plugins_register_and_refuses_the_policy_name(tmp_path):
    from syngrpo.commands.make_tiny import available, make_tiny
    from syngrpo.errors import ConfigError
    from syngrpo.hookspecs import hookimpl
    from syngrpo.testing import registry_with

    class Tiny:
        @hookimpl
        def register_tiny_models(self, register):
            register("note", lambda out_dir, *, seed: (Path(out_dir).mkdir(parents=True) or Path(out_dir)),
                     description="an empty directory")

    registry = registry_with(Tiny())
    assert available(registry) == ["policy", "note"]
    assert make_tiny(tmp_path, seed=1, what=["note"], registry=registry) == {"note": tmp_path / "note"}
    assert (tmp_path / "note").is_dir()
    with pytest.raises(ConfigError, match="--what"):
        make_tiny(tmp_path, what=["sdxl"], registry=registry)  # not registered in this registry

    class Clash:
        @hookimpl
        def register_tiny_models(self, register):
            register("policy", lambda out_dir, *, seed: out_dir)

    with pytest.raises(ConfigError, match="tiny policy"):
        make_tiny(tmp_path, registry=registry_with(Clash()))


def test_the_built_in_tiny_models_are_registered_by_their_plugins():
    from syngrpo.plugins import get_registry

    registry = get_registry()
    assert {"sdxl", "sam"} <= set(registry.names("tiny_models"))
    assert registry.get("tiny_models", "sam").distribution == "syngrpo"
