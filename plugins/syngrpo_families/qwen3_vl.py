"""Qwen3-VL: boxes in 0-1000 coordinates relative to the image.

Qwen3-VL went back to relative coordinates: the grounding examples of its
cookbooks (QwenLM/Qwen3-VL ``cookbooks/``) ask for ``bbox_2d`` and draw the answer
after multiplying by ``width / 1000`` and ``height / 1000`` (checked here through
third-party documents that cite them, REFERENCE.md; not against the notebook itself).  The
vision tower has 16-pixel patches (Qwen2/2.5-VL: 14), and DeepStack feeds
features of early vision layers into the first decoder layers.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from syngrpo.models.family import CoordinateConvention
from syngrpo.models.tiny_policy import tiny_vision
from syngrpo_families._qwen import QwenVLFamily, qwen_rope, qwen_token_ids, text_config


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without the video processor (no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        def token(attr: str, default: str) -> str:
            return getattr(tokenizer, attr, None) or default

        self.image_token = token("image_token", "<|image_pad|>")
        self.video_token = token("video_token", "<|video_pad|>")
        self.vision_start_token = token("vision_start_token", "<|vision_start|>")
        self.vision_end_token = token("vision_end_token", "<|vision_end|>")
        for attr in ("image_token", "video_token", "vision_start_token", "vision_end_token"):
            setattr(self, f"{attr}_id", tokenizer.convert_tokens_to_ids(getattr(self, attr)))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class Qwen3VLFamily(QwenVLFamily):
    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    coordinates = CoordinateConvention(
        "relative", 1000, source="QwenLM/Qwen3-VL grounding cookbooks (via third-party docs citing them): "
                                 "bbox_2d in 0-1000, rescaled by width/1000 and height/1000")
    example_checkpoint = "Qwen/Qwen3-VL-2B-Instruct"
    tiny_patch_size = 16

    def model_class(self) -> Any:
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def processor_class(self) -> Any:
        return ImageOnlyQwen3VLProcessor

    def tiny_config(self, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int) -> Any:
        from transformers import Qwen3VLConfig

        head_dim = text_hidden // 4
        vision = tiny_vision(vision_hidden, vision_depth, 16, out_hidden_size=text_hidden,
                             num_position_embeddings=64,  # a perfect square (the position grid is interpolated)
                             deepstack_visual_indexes=[0])
        text = text_config(tokenizer, text_hidden=text_hidden, layers=layers, head_dim=head_dim,
                           rope=qwen_rope(head_dim, 5_000_000.0, mrope_interleaved=True))
        return Qwen3VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer))
