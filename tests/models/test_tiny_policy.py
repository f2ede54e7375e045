"""The tiny policy builder and the loading / prompt-encoding path real checkpoints share."""

from __future__ import annotations

import json

import pytest
import torch
from syngrpo_families._qwen import QWEN_SPECIAL_TOKENS
from syngrpo_families._qwen import QWEN_VISION_TOKENS as VISION_SPECIAL_TOKENS
from syngrpo_families.qwen2_5_vl import ImageOnlyQwenVLProcessor

from syngrpo.errors import ConfigError, MissingExtraError
from syngrpo.models.policy import encode_prompts, load_policy, vision_tower
from syngrpo.models.tiny_policy import build_tiny_policy, directory_hash, load_processor
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response


def test_same_seed_builds_byte_identical_files_and_another_seed_only_other_weights(tmp_path, tiny_policy_dir):
    again = build_tiny_policy(tmp_path / "again", seed=0)
    other = build_tiny_policy(tmp_path / "other", seed=1)
    assert directory_hash(again) == directory_hash(tiny_policy_dir)
    assert directory_hash(other) != directory_hash(tiny_policy_dir)
    # the tokenizer does not depend on the seed: every tiny policy reads the same text the same way
    assert (other / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()


def test_tiny_policy_is_small_and_speaks_qwen(policy):
    model, tok = policy.model, policy.tokenizer
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model.config.model_type == "qwen2_5_vl"
    vocab = tok.get_vocab()
    ids = [vocab[t] for t in QWEN_SPECIAL_TOKENS]
    assert ids == sorted(ids) and max(ids) < model.config.text_config.vocab_size
    assert model.config.image_token_id == vocab["<|image_pad|>"]
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    assert sum(model.config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert policy.eos_token_ids[:2] == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    assert sorted(policy.suppress_token_ids) == sorted(vocab[t] for t in VISION_SPECIAL_TOKENS)


def test_tokenizer_round_trips_the_response_format(policy):
    text = ("<think>The red circle.</think><score>0.25</score><description>a snowy forest</description>"
            "<answer>[12, 34, 56, 78]</answer>")
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert policy.tokenizer.decode(ids) == text
    assert len(ids) < len(text) // 2  # the corpus taught it the tags and words, not just bytes


def test_chat_template_has_the_qwen2_vl_shape(policy):
    rendered = policy.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find it."}]}],
        tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find it.<|im_end|>\n"
                        "<|im_start|>assistant\n")


def test_processor_loads_without_torchvision_from_the_saved_directory(tiny_policy_dir):
    processor = load_processor(tiny_policy_dir)
    assert isinstance(processor, ImageOnlyQwenVLProcessor)
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.tokenizer.padding_side == "left"
    saved = json.loads((tiny_policy_dir / "processor_config.json").read_text())
    assert saved["processor_class"] == "ImageOnlyQwenVLProcessor"


def test_save_and_load_round_trip_gives_identical_logits(policy, two_prompts, tmp_path):
    policy.model.save_pretrained(tmp_path / "copy")
    policy.processor.save_pretrained(tmp_path / "copy")
    copy = load_policy(tmp_path / "copy")
    with torch.no_grad():
        a = policy.model(**two_prompts.model_inputs()).logits
        b = copy.model(**two_prompts.model_inputs()).logits
    assert torch.equal(a, b)


def test_encode_prompts_left_pads_and_records_the_patch_grid_frame(policy, two_prompts, two_images):
    batch = two_prompts
    grid = batch.image_grid_thw.tolist()
    assert grid[0] == [1, 8, 8]  # 112 px = 8 patches of 14
    assert batch.frames[0] == ImageTransform.resize(112, 112, 112, 112)
    # 200x150 is resized to the nearest multiples of 28 (patch 14 x merge 2): 196 x 140
    assert grid[1] == [1, 10, 14]
    assert (batch.frames[1].width, batch.frames[1].height) == (196, 140)
    assert batch.frames[1].box([100, 75, 200, 150]) == pytest.approx((98.0, 70.0, 196.0, 140.0))
    # one image token per 2x2 merged patch; typed 1 in mm_token_type_ids
    assert batch.mm_token_type_ids.sum(-1).tolist() == [64 // 4, 140 // 4]
    assert torch.equal(batch.mm_token_type_ids.bool(), batch.input_ids == policy.image_token_id)
    # the shorter prompt is left-padded: generation continues every row from its last column
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[:, -1].all()
    assert batch.pixel_values.shape[0] == 64 + 140
    assert len(batch.images) == 2 and batch.images[1].size == (200, 150)


def test_max_pixels_shrinks_the_grid_and_the_frame_follows(policy, two_images):
    batch = encode_prompts(policy, two_images[1:], ["x"], max_pixels=56 * 56 * 2)
    t, h, w = batch.image_grid_thw[0].tolist()
    assert h * w * 14 * 14 <= 56 * 56 * 2
    frame = batch.frames[0]
    assert (frame.width, frame.height) == (w * 14, h * 14)
    back = frame.inverse(200, 150).box(frame.box([10, 20, 150, 140]))
    assert back == pytest.approx((10, 20, 150, 140))


def test_expand_select_and_collapse_keep_rows_and_pixels_together(two_prompts):
    wide = two_prompts.expand(3)
    assert wide.num_rows == 6 and wide.group_size == 3 and wide.num_prompts == 2
    assert torch.equal(wide.input_ids[3], two_prompts.input_ids[1])
    assert torch.equal(wide.pixel_values[64 * 3 : 64 * 3 + 140], two_prompts.pixel_values[64:])
    assert wide.frames[4] == two_prompts.frames[1]
    second = wide.select_prompts([1])
    assert second.group_size == 3 and second.num_rows == 3
    assert torch.equal(second.collapse().pixel_values, two_prompts.pixel_values[64:])
    assert torch.equal(wide.collapse().input_ids, two_prompts.input_ids)
    with pytest.raises(ValueError):
        wide.expand(2)


def test_generated_text_goes_through_the_response_parser(policy, two_prompts):
    from syngrpo_hf.engine import HFRolloutEngine

    rollout = HFRolloutEngine().generate(policy, two_prompts, num_generations=2, temperature=1.0, top_p=1.0,
                                         max_new_tokens=12, generator_seed=0)
    assert len(rollout.texts) == 4 and all(isinstance(t, str) for t in rollout.texts)
    for text in rollout.texts:
        parsed = parse_response(text, "syn")
        assert parsed.text == text and parsed.well_formed is False  # an untrained policy writes noise


def test_qwen2_vl_policies_load_and_generate_through_the_same_code(tmp_path, two_images):
    from syngrpo_hf.engine import HFRolloutEngine

    path = build_tiny_policy(tmp_path / "q2", seed=0, arch="qwen2_vl")
    bundle = load_policy(path)
    assert bundle.model_type == "qwen2_vl"
    batch = encode_prompts(bundle, two_images, ["a", "b"])
    rollout = HFRolloutEngine().generate(bundle, batch, num_generations=2, temperature=1.0, top_p=1.0,
                                         max_new_tokens=6, generator_seed=0)
    assert rollout.completion_ids.shape[0] == 4


def test_load_policy_rejects_a_model_that_is_not_qwen_vl(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="qwen2_5_vl"):
        load_policy(tmp_path)


def test_freeze_vision_stops_gradients_into_the_vision_tower_only(tiny_policy_dir):
    bundle = load_policy(tiny_policy_dir, freeze_vision=True)
    tower = set(map(id, vision_tower(bundle.model).parameters()))
    for p in bundle.model.parameters():
        assert p.requires_grad == (id(p) not in tower)


def test_bfloat16_load_keeps_logprobs_in_float32(tiny_policy_dir, two_images):
    from syngrpo.models.scoring import completion_logprobs

    bundle = load_policy(tiny_policy_dir, dtype="bfloat16")
    assert bundle.dtype == torch.bfloat16 and next(bundle.model.parameters()).dtype == torch.bfloat16
    batch = encode_prompts(bundle, two_images, ["a", "b"])
    assert batch.pixel_values.dtype == torch.bfloat16
    ids = torch.full((2, 3), 5)
    logp, _ = completion_logprobs(bundle.model, batch, ids, torch.ones_like(ids), group_size=1)
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all() and (logp <= 0).all()


def test_lora_without_peft_names_the_extra_to_install(tiny_policy_dir):
    try:
        import peft  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError) as err:
            load_policy(tiny_policy_dir, lora={"r": 4})
        assert err.value.extra == "lora" and "syngrpo[lora]" in str(err.value)
    else:
        bundle = load_policy(tiny_policy_dir, lora={"r": 4, "alpha": 8})
        trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
