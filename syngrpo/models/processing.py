"""An image-only Qwen-VL processor, so policies load without torchvision.

``Qwen2_5_VLProcessor`` insists on a video processor, and the video processor
needs torchvision, whose PyPI wheels are CUDA builds that fail to import next to
a CPU torch.  syngrpo never feeds videos, so this subclass keeps only the image
processor and the tokenizer.  transformers reads a processor's parts from the
``__init__`` signature, which is why the signature here names exactly
``image_processor``, ``tokenizer`` and ``chat_template``.

The same class reads real Qwen2.5-VL and Qwen2-VL checkpoints (their image
processors are identical), so tiny and real policies take one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video processor (and so without torchvision)."""

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


def load_processor(name_or_path: str | Path, **kwargs: Any) -> ImageOnlyQwenVLProcessor:
    """Load the image processor, tokenizer and chat template of a Qwen-VL checkpoint (hub id or directory).

    ``AutoProcessor`` would pick the stock processor (and need torchvision); on a
    tiny-policy directory it even returns the bare tokenizer, because the saved
    processor class is this one.  The tokenizer pads on the left, as batched
    generation needs.
    """
    processor = ImageOnlyQwenVLProcessor.from_pretrained(str(name_or_path), **kwargs)
    processor.tokenizer.padding_side = "left"
    return processor
