"""Qwen2-VL: boxes in 0-1000 coordinates relative to the image.

Qwen2-VL was trained to write boxes normalised to [0, 1000) whatever the image
size (Qwen2-VL paper, arXiv 2409.12191, §2.2 "Visual grounding": coordinates
"normalized within the range [0, 1000)"; its model card's grounding examples).
Its answer frame is therefore the processor's frame scaled to 1000 x 1000.
"""

from __future__ import annotations

from typing import Any

from syngrpo.models.family import CoordinateConvention
from syngrpo_families._qwen import QwenVLFamily, qwen_rope, qwen_token_ids, text_config
from syngrpo_families.qwen2_5_vl import ImageOnlyQwenVLProcessor


class Qwen2VLFamily(QwenVLFamily):
    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    coordinates = CoordinateConvention(
        "relative", 1000, source="Qwen2-VL paper (arXiv 2409.12191) §2.2: box coordinates normalised to [0, 1000)")
    example_checkpoint = "Qwen/Qwen2-VL-2B-Instruct"

    def model_class(self) -> Any:
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def processor_class(self) -> Any:
        return ImageOnlyQwenVLProcessor  # Qwen2.5-VL's: the same image processor and tokens

    def tiny_config(self, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int) -> Any:
        from transformers import Qwen2VLConfig

        # Qwen2-VL's vision config names its sizes its own way (embed_dim, mlp_ratio; hidden_size is the merger's output)
        vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=text_hidden, mlp_ratio=2,
                      num_heads=max(1, vision_hidden // 16), patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        text = text_config(tokenizer, text_hidden=text_hidden, layers=layers, rope=qwen_rope(text_hidden // 4))
        return Qwen2VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer))
