"""Every Table 1 method has a config for Qwen2.5-VL-3B, and they differ only where the method does.

The configs are the paper's REC setting (configs/rec_qwen2_5_vl_3b.yaml) with one change per row;
"w/o R_diversity" means the same thing in the config and in the study's arm (docs/configuration.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syngrpo.config import load_train_config
from syngrpo.study import ARMS

TABLE1 = Path(__file__).resolve().parents[2] / "configs" / "table1"
ROWS = ["grpo", "grpo_entropy_loss", "grpo_entropy_adv", "grpo_offline", "syn_grpo_no_div", "syn_grpo"]


def _load(name: str):
    return load_train_config(TABLE1 / f"{name}.yaml")


def test_there_is_one_config_per_table1_row_and_each_loads():
    assert sorted(p.stem for p in TABLE1.glob("*.yaml")) == sorted(ROWS)
    for name in ROWS:
        cfg = _load(name)
        assert cfg.model.policy == "Qwen/Qwen2.5-VL-3B-Instruct"
        assert cfg.data.task == "rec" and cfg.data.task_options == {"profile": "vlmr1"}


def _comparable(cfg) -> dict:
    """The config minus the keys a Table 1 row may change."""
    d = cfg.model_dump(mode="json")
    for key in ("synthesis", "rewards"):
        d.pop(key)
    d["rollout"].pop("response_format")
    d["algorithm"].pop("policy_loss")
    d["data"].pop("train")
    d["data"].pop("max_train_samples")
    d["data"].pop("image_root")  # the offline file's image paths are absolute or relative to it
    d.pop("offline")
    return d


def test_the_rows_differ_only_where_the_method_does():
    cfgs = {name: _load(name) for name in ROWS}
    base = _comparable(cfgs["syn_grpo"])
    for name, cfg in cfgs.items():
        assert _comparable(cfg) == base, name
    plain = ["grpo", "grpo_entropy_loss", "grpo_entropy_adv", "grpo_offline"]
    for name in plain:
        assert cfgs[name].synthesis.mode == "off" and cfgs[name].response_mode == "plain", name
    assert [cfgs[n].algorithm.policy_loss.name for n in plain] == ["grpo", "entropy_loss", "entropy_advantage", "grpo"]
    assert cfgs["grpo_offline"].data.train != cfgs["grpo"].data.train
    # its originals are the other rows' training data, drawn the same way
    off = cfgs["grpo_offline"].offline
    assert (off.data, off.image_root, off.max_samples) == (cfgs["grpo"].data.train, cfgs["grpo"].data.image_root,
                                                            cfgs["grpo"].data.max_train_samples)
    assert off.describer == "openai" and off.describer_options["model"] == "gpt-4o"
    assert cfgs["syn_grpo"].synthesis.description_selection == "diversity"
    assert cfgs["syn_grpo"].rewards.diversity_weight == 1.0
    # the full method equals the paper config the README points at
    full = load_train_config(TABLE1.parent / "rec_qwen2_5_vl_3b.yaml").model_dump(mode="json")
    assert cfgs["syn_grpo"].model_dump(mode="json")["synthesis"] == full["synthesis"]
    assert cfgs["syn_grpo"].model_dump(mode="json")["rewards"] == full["rewards"]


@pytest.mark.parametrize("key", ["synthesis", "rewards"])
def test_without_r_diversity_means_the_same_in_the_config_and_the_study(key):
    cfg = _load("syn_grpo_no_div")
    assert cfg.rewards.diversity_weight == 0.0
    assert cfg.synthesis.description_selection == "random"
    assert cfg.synthesis.mode != "off"
    arm = ARMS["syn_grpo_no_div"]
    for k, v in arm[key].items():
        if k != "mode":  # the study waits for its images (sync) to keep CPU runs deterministic
            assert getattr(getattr(cfg, key), k) == v, f"{key}.{k}"


def test_the_study_has_the_entropy_advantage_arm():
    assert ARMS["grpo_entropy_adv"]["algorithm"]["policy_loss"]["name"] == "entropy_advantage"
    assert _load("grpo_entropy_adv").algorithm.policy_loss.name == "entropy_advantage"
