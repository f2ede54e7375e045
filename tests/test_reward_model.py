"""The ``reward_model`` reward on a tiny random sequence classifier built from a config (no hub)."""

from __future__ import annotations

from typing import Any

import pytest

from syngrpo.errors import ConfigError
from syngrpo.perception.response import parse_response
from syngrpo.plugins import build_registry, make_plugin_manager
from syngrpo.types import Sample

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    from syngrpo_rewards.tiny import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("judge"))


@pytest.fixture(scope="module")
def plain_judge_dir(tmp_path_factory):
    from syngrpo_rewards.tiny import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("plain"), num_labels=2, chat_template=False, seed=1)


def reward_model(path, **options: Any):
    import syngrpo_rewards.plugin

    registry = build_registry(make_plugin_manager([syngrpo_rewards.plugin], autoload=False))
    return registry.create("rewards", "reward_model", model=str(path), **options)


def batch():
    texts = ["<think>a cat</think><answer>[1,2,3,4]</answer>", "<answer>[0,0,9,9]</answer>",
             "no tags at all, and a much longer completion than the others so that padding matters " * 2]
    samples = [Sample(id=f"s-{i}", task="rec", image="x.jpg", problem=f"Where is thing {i}?", solution=[1, 2, 3, 4],
                      width=8, height=8) for i in range(len(texts))]
    return [parse_response(t, "plain") for t in texts], samples


def one_by_one(path, texts, *, label=0, add_special_tokens=True):
    """Each text alone through transformers' own classes: no batching, no padding."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt", add_special_tokens=add_special_tokens)).logits[0, label].item()
                for t in texts]


def test_reward_model_scores_the_chat_rendered_prompt_and_completion_like_one_unpadded_forward_each(judge_dir):
    responses, samples = batch()
    reward = reward_model(judge_dir, batch_size=2)
    values = reward(responses, samples, task=None)
    expected_texts = [f"<|im_start|>user\n{s.problem}<|im_end|>\n<|im_start|>assistant\n{r.text}<|im_end|>\n"
                      for r, s in zip(responses, samples, strict=True)]
    assert [reward.text(r, s) for r, s in zip(responses, samples, strict=True)] == expected_texts
    assert values == pytest.approx(one_by_one(judge_dir, expected_texts, add_special_tokens=False), abs=1e-5)
    assert len(set(round(v, 4) for v in values)) == 3  # different texts, different scores


def test_reward_model_completion_input_label_and_sigmoid(plain_judge_dir):
    import math

    responses, samples = batch()
    reward = reward_model(plain_judge_dir, input="completion", label=1, transform="sigmoid")
    raw = one_by_one(plain_judge_dir, [r.text for r in responses], label=1)
    assert reward(responses, samples, task=None) == pytest.approx([1 / (1 + math.exp(-v)) for v in raw], abs=1e-5)
    answers = reward_model(plain_judge_dir, input="answer")
    assert answers.text(responses[2], samples[2]) == ""  # no <answer>: the judge reads nothing
    assert reward_model(plain_judge_dir).text(responses[0], samples[0]) == samples[0].problem + responses[0].text


def test_reward_model_never_trains_and_leaves_no_gradient(judge_dir):
    responses, samples = batch()
    reward = reward_model(judge_dir)
    reward(responses, samples, task=None)
    assert not reward.model.training
    assert all(not p.requires_grad and p.grad is None for p in reward.model.parameters())


@pytest.mark.parametrize("options, message", [
    ({"label": 3}, "label 3 is outside the model's 1 logits"),
    ({"device": "cuda:7"}, "device 'cuda:7' is not usable here"),
    ({"transform": "tanh"}, "transform must be one of"),
    ({"labels": 1}, r"unknown option\(s\) \['labels'\]"),
])
def test_reward_model_bad_options_are_config_errors(judge_dir, options, message):
    with pytest.raises(ConfigError, match=message):
        reward_model(judge_dir, **options)


def test_reward_model_missing_directory_names_it(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path.name}/nothing.*not a saved model directory"):
        reward_model(tmp_path / "nothing")
