"""Several images per prompt, end to end on the model side (issue 27 item 2).

A prompt may show several images (``Sample.images``; the label's boxes are in one of them,
``Sample.box_image``).  On a tiny random Qwen2.5-VL: one placeholder per image in prompt order, the
frames of the box image, prompt batches that keep each row's images together through ``select`` /
``expand`` / ``concat_prompts``, and the family contract (scoring = sampler) on the naive,
shared-prefix and packed paths for a batch mixing one, two and three images.  The vLLM engine's
multi-image request and image limit are checked against the stand-in (vLLM is CUDA only).  Every
built-in family's two-image clause is in ``check_family_contract`` (tests/models/test_families.py).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from syngrpo.errors import ConfigError
from syngrpo.models.scoring import completion_logprobs

TEMPERATURE = 0.7
G = 2


@pytest.fixture(scope="module")
def three_images(two_images):
    c = Image.new("RGB", (64, 96), (10, 215, 220))
    ImageDraw.Draw(c).rectangle([10, 10, 40, 50], fill=(200, 30, 30))
    return [*two_images, c]


@pytest.fixture(scope="module")
def mixed(policy, three_images):
    """Prompts of 2, 1 and 3 images (box images 1, 0, 2): rows differ in images, grids and length."""
    from syngrpo.models.policy import encode_prompts

    a, b, c = three_images
    return encode_prompts(
        policy,
        [[a, b], c, [c, a, b]],
        [
            "Locate the blue square in the second image.",
            "Locate the red square.",
            "Locate the blue square in the third image.",
        ],
        box_images=[1, 0, 2],
    )


@pytest.fixture(scope="module")
def sampled(policy, mixed):
    from syngrpo_hf.engine import HFRolloutEngine

    engine = HFRolloutEngine(return_logprobs=True)
    return engine.generate(
        policy, mixed, num_generations=G, temperature=TEMPERATURE, top_p=1.0, max_new_tokens=16, generator_seed=5
    )


def test_one_placeholder_run_per_image_in_prompt_order(policy, mixed):
    assert mixed.counts() == [2, 1, 3]
    grids = mixed.image_grid_thw.tolist()
    assert len(grids) == 6
    vision_start = policy.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    for row, start in zip(range(3), (0, 2, 3), strict=True):
        ids = mixed.input_ids[row][mixed.attention_mask[row].bool()]
        assert int((ids == vision_start).sum()) == mixed.counts()[row]
        n = int((ids == policy.image_token_id).sum())
        want = sum(policy.family.image_token_count(g, policy) for g in grids[start : start + mixed.counts()[row]])
        assert n == want
    assert mixed.prompts[0].count("<|image_pad|>") == 2


def test_frames_are_those_of_each_rows_box_image(policy, mixed, three_images):
    a, b, c = three_images
    # the box images are b (row 0), c (row 1) and b (row 2): the frames map their sizes
    assert [im.size for im in mixed.images] == [b.size, c.size, b.size]
    grids = mixed.image_grid_thw.tolist()
    for frame, grid in zip(mixed.input_frames, (grids[1], grids[2], grids[5]), strict=True):
        assert (frame.width, frame.height) == (grid[2] * policy.patch_size, grid[1] * policy.patch_size)
    assert len(mixed.frames) == 3
    assert [len(mixed.row_images(r)) for r in range(3)] == [2, 1, 3]


def test_select_expand_and_concat_keep_each_rows_images_together(policy, mixed):
    from syngrpo.train.rollouts import concat_prompts

    per_row = mixed.patches_per_row()
    starts = [0, per_row[0], per_row[0] + per_row[1]]
    picked = mixed.select([2, 0])
    assert picked.counts() == [3, 2]
    assert torch.equal(picked.image_grid_thw, mixed.image_grid_thw[[3, 4, 5, 0, 1]])
    assert torch.equal(
        picked.pixel_values, torch.cat([mixed.pixel_values[starts[2] :], mixed.pixel_values[: per_row[0]]])
    )
    expanded = mixed.expand(2)
    assert expanded.counts() == [2, 2, 1, 1, 3, 3]
    assert expanded.collapse().counts() == [2, 1, 3]
    assert torch.equal(expanded.collapse().image_grid_thw, mixed.image_grid_thw)
    joined = concat_prompts([mixed.select([0]), mixed.select([1, 2])], policy.pad_token_id)
    assert joined.counts() == [2, 1, 3]
    assert torch.equal(joined.image_grid_thw, mixed.image_grid_thw)
    assert [len(joined.row_images(r)) for r in range(3)] == [2, 1, 3]


@pytest.mark.parametrize("path", ["naive", "shared-prefix", "packed"])
def test_scoring_equals_the_sampler_on_prompts_of_one_two_and_three_images(policy, sampled, path):
    with torch.no_grad():
        logp, _ = completion_logprobs(
            policy.model,
            sampled.batch,
            sampled.completion_ids,
            sampled.completion_mask,
            group_size=G,
            shared_prefix=path == "shared-prefix",
            packed=path == "packed",
            temperature=TEMPERATURE,
        )
    mask = sampled.completion_mask.bool()
    assert mask.sum() > 20
    assert (logp - sampled.logprobs)[mask].abs().max() < 1e-5


def test_a_family_that_takes_one_image_refuses_two_before_encoding(policy, three_images):
    from syngrpo.models.policy import encode_prompts

    family = type(policy.family)()
    family.max_images = 1
    from dataclasses import replace

    bundle = replace(policy, family=family)
    with pytest.raises(ConfigError, match="shows 2 images, but model family 'qwen2_5_vl' takes at most 1"):
        encode_prompts(bundle, [three_images[:2]], ["q"], box_images=[0])
    encode_prompts(bundle, [three_images[0]], ["q"])  # one image is fine


def test_box_images_must_index_the_prompts_images(policy, three_images):
    from syngrpo.models.policy import encode_prompts

    with pytest.raises(ValueError, match="box_images"):
        encode_prompts(policy, [three_images[:2]], ["q"], box_images=[2])


# ---- the vLLM engine ----------------------------------------------------------------------------------



def test_vllm_gets_each_prompts_images_as_a_list_with_standin_vllm(vllm_standin, fresh_policy, three_images):
    from syngrpo_vllm.engine import VLLMRolloutEngine

    from syngrpo.models.policy import encode_prompts

    a, b, c = three_images
    batch = encode_prompts(fresh_policy, [[a, b], c], ["first", "second"], box_images=[1, 0])
    engine = VLLMRolloutEngine(fresh_policy)
    engine.set_max_new_tokens(8)
    engine.set_max_images(2)  # the trainer's call, from the data
    rollout = engine.generate(
        fresh_policy, batch, num_generations=G, temperature=1.0, top_p=1.0, max_new_tokens=8, generator_seed=1
    )
    llm = vllm_standin.LLM.instances[-1]
    assert llm.kwargs["limit_mm_per_prompt"] == {"image": 2, "video": 0}
    # two images' tokens in the sequence budget: 256 image tokens at the tiny budget, per image
    assert llm.kwargs["max_model_len"] == 2 * 256 + 256 + 8
    sent = llm.requests[-1]
    assert sent[1]["multi_modal_data"]["image"] is batch.images[1]  # one image: the image itself, as before
    first = sent[0]["multi_modal_data"]["image"]
    assert isinstance(first, list) and [im.size for im in first] == [a.size, b.size]
    assert rollout.batch.counts() == [2, 2, 1, 1]


def test_a_prompt_with_more_images_than_the_vllm_limit_is_refused_first_with_standin_vllm(
    vllm_standin, fresh_policy, three_images
):
    from syngrpo_vllm.engine import VLLMRolloutEngine

    from syngrpo.models.policy import encode_prompts

    batch = encode_prompts(fresh_policy, [three_images], ["all three"], box_images=[0])
    engine = VLLMRolloutEngine(fresh_policy, limit_mm_per_prompt={"image": 2})
    with pytest.raises(ConfigError, match=r"shows 3 images but the vLLM engine takes 2.*limit_mm_per_prompt"):
        engine.generate(fresh_policy, batch, num_generations=1, temperature=1.0, top_p=1.0, max_new_tokens=4)
    engine.set_max_images(3)
    engine.generate(fresh_policy, batch, num_generations=1, temperature=1.0, top_p=1.0, max_new_tokens=4)
    assert vllm_standin.LLM.instances[-1].kwargs["limit_mm_per_prompt"]["image"] == 3
    with pytest.raises(RuntimeError, match="before the first rollout"):
        engine.set_max_images(4)  # the LLM exists: its limit cannot change any more
