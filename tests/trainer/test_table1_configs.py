"""Every Table 1 method has a config for Qwen2.5-VL-3B, and each is the paper's config except its method keys.

The paper's REC setting is ``configs/rec_qwen2_5_vl_3b.yaml``; a row's config is compared with it whole (the
loaded, validated config, every key), and the only keys allowed to differ are the row's method keys below, the
ones its file sets on top of ``extends: ../rec_qwen2_5_vl_3b.yaml`` and its header names. "w/o R_diversity" means
the same thing in the config and in the study's arm (docs/configuration.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syngrpo.config import load_train_config
from syngrpo.experiments.study import ARMS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TABLE1 = CONFIGS / "table1"
PAPER = CONFIGS / "rec_qwen2_5_vl_3b.yaml"
ROWS = ["grpo", "grpo_entropy_loss", "grpo_entropy_adv", "grpo_offline", "syn_grpo_no_div", "syn_grpo"]

#: plain GRPO: no synthesis (so <think><answer> responses, response_format auto) and no R_diversity
PLAIN = {"synthesis.mode": "off", "rewards.diversity_weight": 0.0}
#: row -> every key whose value differs from the paper config's, with the row's value (dotted keys of the dump)
METHOD_KEYS: dict[str, dict[str, Any]] = {
    "syn_grpo": {},
    "syn_grpo_no_div": {"rewards.diversity_weight": 0.0, "synthesis.description_selection": "random"},
    "grpo": PLAIN,
    "grpo_entropy_loss": {**PLAIN, "algorithm.policy_loss.name": "entropy_loss",
                          "algorithm.policy_loss.options.coef": 1e-3},
    "grpo_entropy_adv": {**PLAIN, "algorithm.policy_loss.name": "entropy_advantage",
                         "algorithm.policy_loss.options.alpha": 0.4, "algorithm.policy_loss.options.kappa": 2.0},
    "grpo_offline": {
        **PLAIN,
        # trains on the file `syngrpo synth --offline` writes: the 2,000 originals and their synthesized variants,
        # whole (no max_train_samples cut); its image paths are absolute or relative to the file (no image_root),
        # while the evaluation file keeps the paper config's image root
        "data.train": "data/rec/offline/train.jsonl", "data.max_train_samples": None, "data.image_root": None,
        "data.eval_image_root": "data/coco/train2014",
        # the paper's budget, 5 epochs x 2,000 samples / batch 20 = 500 steps (10,000 sample updates), which
        # 5 epochs over originals + variants would double
        "optim.max_steps": 500,
        "offline.describer": "openai", "offline.describer_options.base_url": "https://api.openai.com/v1",
        "offline.describer_options.model": "gpt-4o", "offline.describer_options.api_key_env": "OPENAI_API_KEY",
        "offline.data": "data/rec/refcoco_train.jsonl", "offline.image_root": "data/coco/train2014",
        "offline.max_samples": 2000,
    },
}
MISSING = "<absent>"


def _load(name: str):
    return load_train_config(TABLE1 / f"{name}.yaml")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config dump as dotted keys; nested mappings (sections and option maps) are opened (an empty one has no
    keys), lists kept whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _differences(cfg, paper) -> dict[str, Any]:
    row, base = _flat(cfg.model_dump(mode="json")), _flat(paper.model_dump(mode="json"))
    return {k: row.get(k, MISSING) for k in sorted(row.keys() | base.keys())
            if row.get(k, MISSING) != base.get(k, MISSING)}


def test_there_is_one_config_per_table1_row_and_each_loads():
    assert sorted(p.stem for p in TABLE1.glob("*.yaml")) == sorted(ROWS) == sorted(METHOD_KEYS)
    for name in ROWS:
        cfg = _load(name)
        assert cfg.model.policy == "Qwen/Qwen2.5-VL-3B-Instruct"
        assert cfg.data.task == "rec" and cfg.data.task_options == {"profile": "vlmr1"}


@pytest.mark.parametrize("name", ROWS)
def test_each_row_is_the_paper_config_except_its_method_keys(name):
    """The whole validated config, key by key: model, data, rollout, algorithm, optim, eval, logging, parallel,
    hardware ... equal the paper config's; only the row's method keys differ, and to the values named here."""
    assert _differences(_load(name), load_train_config(PAPER)) == METHOD_KEYS[name]


def test_every_row_trains_as_many_steps_as_the_paper_config():
    paper = load_train_config(PAPER)
    steps = paper.optim.total_steps(paper.data.max_train_samples)
    assert steps == 500  # 5 epochs x 2,000 samples / 20 prompts a step
    for name in ROWS:
        cfg = _load(name)
        if name == "grpo_offline":  # its file: the originals, each followed by its synthesized variants
            samples = cfg.offline.max_samples * (1 + cfg.offline.variants)
        else:
            samples = cfg.data.max_train_samples
        assert cfg.optim.total_steps(samples) == steps, name


def test_the_rows_are_the_methods_they_name():
    cfgs = {name: _load(name) for name in ROWS}
    plain = ["grpo", "grpo_entropy_loss", "grpo_entropy_adv", "grpo_offline"]
    for name in plain:
        assert cfgs[name].synthesis.mode == "off" and cfgs[name].response_mode == "plain", name
    assert [cfgs[n].algorithm.policy_loss.name for n in plain] == ["grpo", "entropy_loss", "entropy_advantage", "grpo"]
    for name in ("syn_grpo", "syn_grpo_no_div"):
        assert cfgs[name].synthesis.mode == "async" and cfgs[name].response_mode == "syn", name
    # the offline row's originals are the other rows' training data, drawn the same way
    off = cfgs["grpo_offline"].offline
    assert (off.data, off.image_root, off.max_samples) == (cfgs["grpo"].data.train, cfgs["grpo"].data.image_root,
                                                            cfgs["grpo"].data.max_train_samples)
    # the full method is the paper config the README points at
    assert cfgs["syn_grpo"] == load_train_config(PAPER)


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
