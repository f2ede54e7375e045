"""The paper's methods as training-config switches: one table for the main job, the study and the control.

Each method of Syn-GRPO's Table 1 is a few ``TrainConfig`` keys set on top of one shared config, so a method is
the same thing wherever it runs: ``syngrpo train --set synthesis.mode=off`` is the ``grpo`` row on the main job,
the toy study's ``grpo`` arm sets the same keys, and the control experiment (:mod:`.control`) compares the rows on
the quickstart. The response format is never set here: ``rollout.response_format: auto`` follows the format the
shared warm start records (``syn``), so every method answers alike and only what the paper varies differs.
``rewards.diversity_weight`` is left to its default (on with synthesis, off without) except where the paper's
ablation removes R_diversity with synthesis on.
"""

from __future__ import annotations

from typing import Any

#: method -> the TrainConfig keys it sets (nested, as in a config file)
ARMS: dict[str, dict[str, Any]] = {
    "grpo": {"synthesis": {"mode": "off"}},
    "syn_grpo_no_div": {"synthesis": {"mode": "sync", "description_selection": "random"},
                        "rewards": {"diversity_weight": 0.0}},
    "syn_grpo": {"synthesis": {"mode": "sync", "description_selection": "diversity"}},
    "grpo_entropy": {"synthesis": {"mode": "off"}, "algorithm": {"policy_loss": {"name": "entropy_loss"}}},
    "grpo_entropy_adv": {"synthesis": {"mode": "off"}, "algorithm": {"policy_loss": {"name": "entropy_advantage"}}},
    # plain GRPO on originals + images synthesized before training (syngrpo.train.offline), described by the
    # study's ``describer`` (default ``template``: no hosted model here, so a model-free one stands in for GPT-4o)
    "grpo_offline": {"synthesis": {"mode": "off"}, "offline": {"variants": 1}},
    # not in the paper: DAPO's answer to the same zero-variance groups (docs/algorithm.md#dynamic-sampling-dapo);
    # max_tries 4 keeps a CPU study's sampling within ~4x GRPO's (dynamic/prompts_drawn says what it cost)
    "grpo_dynamic": {"synthesis": {"mode": "off"},
                     "algorithm": {"dynamic_sampling": {"enabled": True, "metric": "accuracy", "max_tries": 4,
                                                        "at_cap": "fill"}}},
}
#: arms whose training data is written by offline generation first
OFFLINE_ARMS = frozenset(arm for arm, keys in ARMS.items() if "offline" in keys)
#: row labels, in the paper's words
ARM_LABELS = {
    "grpo": "GRPO",
    "syn_grpo_no_div": "Syn-GRPO w/o R_diversity",
    "syn_grpo": "Syn-GRPO",
    "grpo_entropy": "GRPO + Entropy Loss",
    "grpo_entropy_adv": "GRPO + Entropy Adv.",
    "grpo_offline": "GRPO + Offline Generation",
    "grpo_dynamic": "GRPO + Dynamic Sampling (DAPO)",
}
