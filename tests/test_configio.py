"""Config loading: YAML, --set overrides, and errors that name the bad key."""

from __future__ import annotations

import pytest
from pydantic import Field

from syngrpo.config.io import StrictModel, apply_overrides, dump_config, load_config, load_yaml
from syngrpo.errors import ConfigError


class Optim(StrictModel):
    lr: float = Field(1e-6, gt=0)
    batch_size: int = 20


class Cfg(StrictModel):
    seed: int = 0
    optim: Optim = Optim()


def test_overrides_parse_values_as_yaml_and_create_sections():
    out = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=1e-5", "seed=3", "a.b.c=[1, 2]"])
    assert out == {"optim": {"lr": 1e-5}, "seed": 3, "a": {"b": {"c": [1, 2]}}}


def test_exponent_numbers_without_a_dot_are_floats_in_files_and_free_option_maps(tmp_path):
    # YAML 1.1 (PyYAML) would read these as strings; a plugin's options dict has no type to coerce them.
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 5E-7\nextra:\n  eps: 1e-4\n  big: +2e3\n  name: 1e-4x\n")
    data = load_yaml(p)
    assert data == {"optim": {"lr": 5e-7}, "extra": {"eps": 1e-4, "big": 2000.0, "name": "1e-4x"}}
    assert isinstance(data["extra"]["eps"], float)
    assert apply_overrides({}, ["opts.eps=-3e-2", "opts.tag=e5"]) == {"opts": {"eps": -0.03, "tag": "e5"}}


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["optim.lr"])


def test_file_then_overrides_win(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\noptim:\n  lr: 0.5\n")
    cfg = load_config(Cfg, p, ["optim.batch_size=4"])
    assert (cfg.seed, cfg.optim.lr, cfg.optim.batch_size) == (1, 0.5, 4)


def test_misspelt_key_is_named_in_the_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  learning_rate: 0.5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, p)
    assert "optim.learning_rate: unknown key" in str(exc.value)
    assert str(p) in str(exc.value)


def test_out_of_range_value_says_why():
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, None, ["optim.lr=-1"])
    assert "optim.lr" in str(exc.value) and "greater than 0" in str(exc.value)


def test_missing_file_and_non_mapping_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, p)


def test_dumped_config_loads_back_equal(tmp_path):
    cfg = load_config(Cfg, None, ["seed=7"])
    p = tmp_path / "out.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(Cfg, p) == cfg


def test_extends_merges_the_file_over_its_base_found_relative_to_the_file(tmp_path):
    """A config can be "that one, except ...": the base's keys, the file's merged over them, ``--set`` last."""
    (tmp_path / "base.yaml").write_text("seed: 1\noptim:\n  lr: 0.5\n  batch_size: 8\n")
    (tmp_path / "rows").mkdir()
    child = tmp_path / "rows" / "child.yaml"
    child.write_text("extends: ../base.yaml\noptim:\n  batch_size: 4\n")
    assert load_config(Cfg, child) == Cfg(seed=1, optim=Optim(lr=0.5, batch_size=4))
    assert load_config(Cfg, child, ["optim.lr=0.25"]).optim == Optim(lr=0.25, batch_size=4)
    # the key is the loader's, not the config's: it is gone from what validates and from the dump
    assert "extends" not in dump_config(load_config(Cfg, child))


def test_extends_chains_and_a_null_in_the_file_replaces_the_base_value(tmp_path):
    class Opt(StrictModel):
        root: str | None = None
        n: int = 0

    class Top(StrictModel):
        data: Opt = Opt()

    (tmp_path / "a.yaml").write_text("data:\n  root: images\n  n: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\ndata:\n  n: 2\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\ndata:\n  root: null\n")
    assert load_config(Top, tmp_path / "c.yaml").data == Opt(root=None, n=2)


def test_extends_errors_name_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle.*a\.yaml.*b\.yaml.*a\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*extends 'nope\.yaml'.*does not exist"):
        load_config(Cfg, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"d\.yaml.*extends.*path"):
        load_config(Cfg, tmp_path / "d.yaml")
    # a bad key in the base is reported with the file that names it
    (tmp_path / "e.yaml").write_text("optim:\n  learning_rate: 1\n")
    (tmp_path / "f.yaml").write_text("extends: e.yaml\n")
    with pytest.raises(ConfigError, match=r"f\.yaml.*extends.*e\.yaml[\s\S]*optim\.learning_rate: unknown key"):
        load_config(Cfg, tmp_path / "f.yaml")
