"""Log-probs used in the loss agree with the sampler's, and the shared-prefix pass equals the naive one.

The multimodal position bug (REFERENCE.md: without ``mm_token_type_ids``
transformers 5 silently uses 1-D positions and log-probs drift by ~1e-3) must
not come back: the agreement test below fails if scoring drops that input, and
a control test shows the drift is real on this model.
"""

from __future__ import annotations

import math

import pytest
import torch

from syngrpo.models.scoring import completion_logprobs, supports_shared_prefix, token_logprobs

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def sampled(policy, two_prompts):
    """G = 3 completions per prompt with the engine's own log-probs (raw logits / temperature)."""
    from syngrpo_hf.engine import HFRolloutEngine

    engine = HFRolloutEngine(return_logprobs=True)
    return engine.generate(policy, two_prompts, num_generations=3, temperature=TEMPERATURE, top_p=1.0,
                           max_new_tokens=20, generator_seed=3)


@pytest.mark.parametrize("shared_prefix", [False, True], ids=["naive", "shared-prefix"])
def test_loss_logprobs_agree_with_the_sampling_engine(policy, sampled, shared_prefix):
    with torch.no_grad():
        logp, _ = completion_logprobs(policy.model, sampled.batch, sampled.completion_ids, sampled.completion_mask,
                                      group_size=3, shared_prefix=shared_prefix, temperature=TEMPERATURE)
    mask = sampled.completion_mask.bool()
    assert mask.sum() > 30
    assert (logp - sampled.logprobs)[mask].abs().max() < 1e-5


def test_scoring_without_mm_token_type_ids_would_disagree(policy, sampled):
    """The control: the same forward minus ``mm_token_type_ids`` drifts far beyond the 1e-5 tolerance."""
    b = sampled.batch
    ids = torch.cat([b.input_ids, sampled.completion_ids], 1)
    attention = torch.cat([b.attention_mask, sampled.completion_mask], 1)
    T = sampled.completion_ids.shape[1]
    with torch.no_grad():
        logits = policy.model(input_ids=ids, attention_mask=attention, pixel_values=b.pixel_values,
                              image_grid_thw=b.image_grid_thw, logits_to_keep=T + 1).logits[:, :-1]
    logp, _ = token_logprobs(logits, sampled.completion_ids, temperature=TEMPERATURE)
    mask = sampled.completion_mask.bool()
    assert (logp - sampled.logprobs)[mask].abs().max() > 1e-4


def _logprobs_and_grads(model, rollout, *, shared_prefix):
    model.zero_grad(set_to_none=True)
    logp, entropy = completion_logprobs(model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                        group_size=rollout.group_size, shared_prefix=shared_prefix, with_entropy=True)
    # a loss of the shape GRPO uses: per-token terms, weighted differently per row
    weights = torch.linspace(-1.0, 1.0, logp.shape[0])[:, None]
    ((logp * weights).sum() + 0.1 * entropy.sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy.detach(), grads


def test_shared_prefix_gives_the_naive_logprobs_entropies_and_gradients(fresh_policy, sampled):
    model = fresh_policy.model.train()
    assert supports_shared_prefix(model)
    lp_a, ent_a, g_a = _logprobs_and_grads(model, sampled, shared_prefix=False)
    lp_b, ent_b, g_b = _logprobs_and_grads(model, sampled, shared_prefix=True)
    assert (lp_a - lp_b).abs().max() <= 1e-5 * lp_a.abs().max()
    assert (ent_a - ent_b).abs().max() <= 1e-5 * ent_a.abs().max()
    assert g_a.keys() == g_b.keys()
    assert any("visual" in n for n in g_a)  # the vision tower is trained through both paths
    for name in g_a:
        scale = g_a[name].abs().max().clamp(min=1e-12)
        assert (g_a[name] - g_b[name]).abs().max() <= 1e-5 * scale, name


def test_collapsed_and_expanded_prompt_batches_score_the_same(policy, sampled):
    with torch.no_grad():
        a, _ = completion_logprobs(policy.model, sampled.batch, sampled.completion_ids, sampled.completion_mask,
                                   group_size=3)
        b, _ = completion_logprobs(policy.model, sampled.batch.collapse(), sampled.completion_ids,
                                   sampled.completion_mask, group_size=3)
        c, _ = completion_logprobs(policy.model, sampled.batch.collapse(), sampled.completion_ids,
                                   sampled.completion_mask, group_size=3, shared_prefix=True)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-5)


def test_positions_after_the_completion_mask_score_zero(policy, sampled):
    mask = sampled.completion_mask.clone()
    mask[:, 5:] = 0
    with torch.no_grad():
        logp, ent = completion_logprobs(policy.model, sampled.batch, sampled.completion_ids, mask, group_size=3,
                                        with_entropy=True)
    assert (logp[:, 5:] == 0).all() and (ent[:, 5:] == 0).all()
    assert (logp[:, :5] < 0).all() and (ent[:, :5] > 0).all()


def test_a_mismatched_group_size_is_an_error(policy, sampled):
    with pytest.raises(ValueError, match="do not fit"):
        completion_logprobs(policy.model, sampled.batch.collapse(), sampled.completion_ids, sampled.completion_mask,
                            group_size=4)


def test_token_logprobs_and_entropy_match_hand_values():
    # logits (0, ln 3): probabilities 1/4 and 3/4
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    logp, ent = token_logprobs(logits, torch.tensor([[1]]), with_entropy=True)
    assert logp.item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    # temperature 2 halves the logits: (0, ln 3 / 2) -> p1 = sqrt3 / (1 + sqrt3)
    logp2, _ = token_logprobs(logits, torch.tensor([[1]]), temperature=2.0)
    assert logp2.item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))), abs=1e-6)


def test_shared_prefix_needs_a_qwen_vl_model_without_activation_checkpointing(tiny_policy_dir, policy, sampled):
    from syngrpo.models.policy import load_policy

    assert not supports_shared_prefix(torch.nn.Linear(2, 2))
    bundle = load_policy(tiny_policy_dir, gradient_checkpointing=True)
    bundle.model.train()
    assert not supports_shared_prefix(bundle.model)
    # the naive pass still works under checkpointing, with the same values and a usable backward
    logp, _ = completion_logprobs(bundle.model, sampled.batch, sampled.completion_ids, sampled.completion_mask,
                                  group_size=3, temperature=TEMPERATURE)
    logp.sum().backward()
    assert (logp.detach() - sampled.logprobs)[sampled.completion_mask.bool()].abs().max() < 1e-5
    bundle.model.eval()
    assert supports_shared_prefix(bundle.model)


def test_qwen2_vl_scores_like_its_sampler_on_both_paths(tmp_path, two_images):
    from syngrpo_hf.engine import HFRolloutEngine

    from syngrpo.models.policy import encode_prompts, load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy

    bundle = load_policy(build_tiny_policy(tmp_path / "q2", seed=0, arch="qwen2_vl"))
    batch = encode_prompts(bundle, two_images, ["a", "b c"])
    rollout = HFRolloutEngine(return_logprobs=True).generate(bundle, batch, num_generations=2, temperature=0.7,
                                                             top_p=1.0, max_new_tokens=12, generator_seed=0)
    mask = rollout.completion_mask.bool()
    for shared in (False, True):
        with torch.no_grad():
            logp, _ = completion_logprobs(bundle.model, rollout.batch, rollout.completion_ids,
                                          rollout.completion_mask, group_size=2, shared_prefix=shared,
                                          temperature=0.7)
        assert (logp - rollout.logprobs)[mask].abs().max() < 1e-5


def test_shared_prefix_scoring_warns_nothing_that_would_break_the_progress_bar(policy, sampled, caplog):
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache``: passing the old name printed a
    FutureWarning on every training run, in the middle of the step bar (issue #25). The cache goes in under the
    name the forward takes, and is read back under the name the output holds."""
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        with torch.no_grad():
            completion_logprobs(policy.model, sampled.batch, sampled.completion_ids, sampled.completion_mask,
                                group_size=3, shared_prefix=True, temperature=TEMPERATURE)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "past_key_values" in m or "deprecated" in m], said
