"""The ``hf`` rollout engine: G samples per prompt, prompt-major, masks that end at EOS, settings honoured."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.models.rollout import Rollout, RolloutEngine, completion_mask_from_ids


@pytest.fixture(scope="module")
def engine():
    from syngrpo.plugins import get_registry

    return get_registry().create("rollout_engines", "hf")


def _greedy(engine, bundle, batch, G=1, max_new_tokens=10):
    return engine.generate(bundle, batch, num_generations=G, temperature=0.0, top_p=1.0,
                           max_new_tokens=max_new_tokens)


def test_hf_engine_is_registered_through_its_entry_point_and_fits_the_protocol(engine):
    from syngrpo.plugins import get_registry

    entry = get_registry().get("rollout_engines", "hf")
    assert entry.plugin.endswith("syngrpo_hf.plugin") or entry.distribution == "syngrpo"
    assert isinstance(engine, RolloutEngine) and engine.name == "hf"
    with pytest.raises(ConfigError, match="unknown option"):
        get_registry().create("rollout_engines", "hf", temprature=1.0)


def test_rollout_rows_are_prompt_major_and_each_group_is_its_prompts(engine, policy, two_prompts):
    rollout = _greedy(engine, policy, two_prompts, G=3)
    assert isinstance(rollout, Rollout)
    assert rollout.completion_ids.shape[0] == 6 and rollout.group_size == 3 and rollout.num_prompts == 2
    assert rollout.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert rollout.batch.num_rows == 6 and rollout.batch.group_size == 3
    assert rollout.batch.frames[3] == two_prompts.frames[1]
    # each group is what that prompt alone decodes to (the left padding of the batch changes nothing)
    for p in range(2):
        alone = _greedy(engine, policy, two_prompts.select([p]))
        T = alone.completion_ids.shape[1]
        for row in range(3 * p, 3 * p + 3):
            assert torch.equal(rollout.completion_ids[row, :T], alone.completion_ids[0])
    assert rollout.texts[0] == rollout.texts[2] and rollout.texts[0] != rollout.texts[3]


def test_near_zero_temperature_samples_the_greedy_answer_g_times(engine, policy, two_prompts):
    greedy = _greedy(engine, policy, two_prompts, G=3)
    cold = engine.generate(policy, two_prompts, num_generations=3, temperature=1e-4, top_p=1.0,
                           max_new_tokens=10, generator_seed=0)
    assert torch.equal(cold.completion_ids, greedy.completion_ids)


def test_temperature_one_sampling_differs_within_a_group(engine, policy, two_prompts):
    hot = engine.generate(policy, two_prompts, num_generations=4, temperature=1.0, top_p=1.0,
                          max_new_tokens=10, generator_seed=0)
    assert len({tuple(r) for r in hot.completion_ids[:4].tolist()}) > 1


def test_top_p_narrows_sampling_to_the_greedy_token(engine, policy, two_prompts):
    greedy = _greedy(engine, policy, two_prompts, G=4)
    narrow = engine.generate(policy, two_prompts, num_generations=4, temperature=1.0, top_p=1e-6,
                             max_new_tokens=10, generator_seed=0)
    assert torch.equal(narrow.completion_ids, greedy.completion_ids)


def test_a_generator_seed_repeats_samples_and_leaves_the_global_rng_alone(engine, policy, two_prompts):
    state = torch.get_rng_state()
    a = engine.generate(policy, two_prompts, num_generations=3, temperature=1.0, top_p=1.0, max_new_tokens=8,
                        generator_seed=11)
    b = engine.generate(policy, two_prompts, num_generations=3, temperature=1.0, top_p=1.0, max_new_tokens=8,
                        generator_seed=11)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("generator_seed", [0, 10])
def test_max_new_tokens_caps_the_completion_length(engine, policy, two_prompts, generator_seed):
    """Every row is cut off at the cap and flagged so; a row that ends at EOS first is not flagged.

    The untrained policy samples <|im_end|> in a 5-token row about once in eleven generator seeds (seed 10
    does), so "it never ends this soon" is not something to count on: the end-of-sequence tokens are
    suppressed for the cap check (the policy cannot end, whatever it samples), and the flag is checked
    row by row on the policy as it is.
    """
    unending = dataclasses.replace(policy, suppress_token_ids=[*policy.suppress_token_ids, *policy.eos_token_ids])
    capped = engine.generate(unending, two_prompts, num_generations=2, temperature=1.0, top_p=1.0,
                             max_new_tokens=5, generator_seed=generator_seed)
    assert capped.completion_ids.shape[1] == 5 and (capped.lengths == 5).all()
    assert capped.truncated.all()  # every row was cut off
    rollout = engine.generate(policy, two_prompts, num_generations=2, temperature=1.0, top_p=1.0,
                              max_new_tokens=5, generator_seed=generator_seed)
    assert rollout.completion_ids.shape[1] <= 5 and (rollout.lengths <= 5).all()
    for row, length, cut in zip(rollout.completion_ids.tolist(), rollout.lengths.tolist(),
                                rollout.truncated.tolist(), strict=True):
        ended = row[length - 1] in policy.eos_token_ids
        assert cut == (not ended) and (ended or length == 5), (row, length, cut)


def test_masks_end_at_the_first_eos_inclusive_and_padding_follows(engine, policy, two_prompts):
    free = _greedy(engine, policy, two_prompts, G=2, max_new_tokens=12)
    # declare a token the policy writes in prompt 0 (first written at position k >= 1) an end-of-sequence token
    tokens = free.completion_ids[0].tolist()
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    stop = tokens[k]
    bundle = dataclasses.replace(policy, eos_token_ids=[stop, *policy.eos_token_ids])
    rollout = _greedy(engine, bundle, two_prompts, G=2, max_new_tokens=12)
    mask = rollout.completion_mask
    assert mask[0].tolist()[: k + 1] == [1] * (k + 1) and mask[0, k + 1 :].sum() == 0
    assert rollout.completion_ids[0, k] == stop
    assert (rollout.completion_ids[0, k + 1 :] == policy.pad_token_id).all()
    assert not rollout.truncated[0]
    for row in mask.tolist():  # every mask is a run of ones then zeros
        n = sum(row)
        assert row == [1] * n + [0] * (len(row) - n)
    assert rollout.texts[0] == policy.decode(rollout.completion_ids[:1, : k + 1])[0]


def test_vision_tokens_are_never_sampled(engine, fresh_policy, two_prompts):
    """A model pushed to write <|image_pad|> still cannot: the engine suppresses vision tokens."""
    bundle = fresh_policy
    image_pad = bundle.image_token_id
    other = 100
    head = bundle.model.lm_head.weight
    with torch.no_grad():
        direction = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(0))
        head.zero_()
        head[image_pad] = 50 * direction  # wins whenever the hidden state leans towards `direction`
        head[other] = -50 * direction  # and this one whenever it leans away
    unsuppressed = dataclasses.replace(bundle, suppress_token_ids=[])
    leaked = _greedy(engine, unsuppressed, two_prompts, G=1, max_new_tokens=12)
    assert (leaked.completion_ids == image_pad).any()  # the control: without suppression it does leak
    rollout = _greedy(engine, bundle, two_prompts, G=1, max_new_tokens=12)
    assert not torch.isin(rollout.completion_ids, torch.tensor(bundle.suppress_token_ids)).any()
    # and the completions can be scored with the image (a leaked <|image_pad|> would break this forward)
    from syngrpo.models.scoring import completion_logprobs

    with torch.no_grad():
        logp, _ = completion_logprobs(bundle.model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                      group_size=1)
    assert torch.isfinite(logp).all()


def test_completion_mask_from_ids_by_hand():
    ids = torch.tensor([[5, 7, 2, 9], [2, 5, 5, 5], [5, 5, 5, 5], [5, 3, 2, 3]])
    mask = completion_mask_from_ids(ids, [2, 3])
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
