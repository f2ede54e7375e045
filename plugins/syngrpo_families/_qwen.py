"""What Qwen2-VL, Qwen2.5-VL and Qwen3-VL share: special tokens, the chat template, the tiny build."""

from __future__ import annotations

from typing import Any

from syngrpo.models.tiny_policy import TinyFamily, text_rope_sections

#: the Qwen-VL special tokens, in the order Qwen's tokenizer lists them
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: special tokens that only the processor may place; sampling them breaks the next forward with pixels
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

#: a chat template of the Qwen2-VL shape: a default system turn, ``<|im_start|>role\n...<|im_end|>\n``
#: turns, and ``<|vision_start|><|image_pad|><|vision_end|>`` for each image part
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_token_ids(tokenizer) -> dict[str, Any]:
    """Token-id entries of a Qwen-VL config, the local tokenizer's ids (not the real checkpoints')."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


class QwenVLFamily(TinyFamily):
    """Base of the Qwen-VL families: same tokens, template and tiny build (:class:`TinyFamily`); configs differ."""

    suppress_tokens = QWEN_VISION_TOKENS
    eos_tokens = ("<|im_end|>", "<|endoftext|>")
    special_tokens = QWEN_SPECIAL_TOKENS
    eos_token = "<|im_end|>"
    pad_token = "<|endoftext|>"
    chat_template = QWEN_CHAT_TEMPLATE
    #: patch size of the tiny model (Qwen2/2.5-VL 14, Qwen3-VL 16)
    tiny_patch_size = 14

    def tiny_generation(self, tokenizer) -> dict[str, Any]:
        end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
        return dict(bos_token_id=pad, eos_token_id=[end, pad], pad_token_id=pad)

    def tiny_image_processor(self, max_pixels: int) -> Any:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        patch = self.tiny_patch_size
        return Qwen2VLImageProcessorPil(size={"shortest_edge": (2 * patch) ** 2 * 4, "longest_edge": max_pixels},
                                        patch_size=patch, temporal_patch_size=2, merge_size=2)


def qwen_rope(head_dim: int, theta: float = 1_000_000.0, **extra: Any) -> dict[str, Any]:
    """The multimodal rotary settings of a tiny Qwen-VL: ``head_dim / 2`` frequencies split over (t, h, w)."""
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": text_rope_sections(head_dim), **extra}


def text_config(tokenizer, *, text_hidden: int, layers: int, rope: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The language-model part of a tiny Qwen-VL config (4 heads, 2 KV heads, FFN 2x hidden)."""
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters=rope,
        bos_token_id=pad,
        eos_token_id=end,
        pad_token_id=pad,
        tie_word_embeddings=False,
        **extra,
    )
