"""Qwen2.5-VL: boxes in absolute pixels of the resized image the model saw.

Qwen2.5-VL was trained on absolute coordinates of the input image after the
processor's resize (Qwen2.5-VL technical report, arXiv 2502.13923, §2.2.1
"absolute coordinates"), so its answer frame is the processor's frame itself.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from syngrpo.models.family import CoordinateConvention
from syngrpo.models.tiny_policy import tiny_vision
from syngrpo_families._qwen import QwenVLFamily, qwen_rope, qwen_token_ids, text_config


class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video processor (and so without torchvision).

    transformers reads a processor's parts from the ``__init__`` signature, which is
    why it names exactly ``image_processor``, ``tokenizer`` and ``chat_template``.
    The same class reads Qwen2-VL checkpoints (their image processors are identical).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        # Skip Qwen2_5_VLProcessor.__init__: it forwards a video processor positionally.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class Qwen25VLFamily(QwenVLFamily):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    coordinates = CoordinateConvention(
        "pixels", source="Qwen2.5-VL technical report (arXiv 2502.13923) §2.2.1: absolute coordinates of the "
                         "resized input image")
    example_checkpoint = "Qwen/Qwen2.5-VL-3B-Instruct"

    def model_class(self) -> Any:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def processor_class(self) -> Any:
        return ImageOnlyQwenVLProcessor

    def tiny_config(self, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int) -> Any:
        from transformers import Qwen2_5_VLConfig

        vision = tiny_vision(vision_hidden, vision_depth, 14, window_size=112, fullatt_block_indexes=[vision_depth - 1],
                             out_hidden_size=text_hidden, tokens_per_second=2)
        text = text_config(tokenizer, text_hidden=text_hidden, layers=layers, rope=qwen_rope(text_hidden // 4))
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer))
