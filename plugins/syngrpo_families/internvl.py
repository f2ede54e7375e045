"""InternVL3 / InternVL3.5 as transformers implements them (``InternVLForConditionalGeneration``, ``-hf`` checkpoints).

Boxes are written ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>`` in 0-1000 coordinates relative to the
original image: InternVL's own RefCOCO evaluation (OpenGVLab/InternVL,
``internvl_chat/eval/refcoco/evaluate_grounding.py``) reads the first ``[[x1,y1,x2,y2]]`` of the answer, divides
it by 1000 and multiplies by the image's width and height.  The tasks' parsers read the numbers inside.

How it differs from the patch-grid families (Qwen-VL, GLM-4.1V), and how the ``ModelFamily`` hooks absorb it:

* **Tiles, not patches.**  The image processor (``GotOcr2ImageProcessor``) cuts the image into up to
  ``max_patches`` square tiles of the vision tower's size on the canvas whose aspect ratio is closest to the
  image's, plus a thumbnail of the whole image when there is more than one tile; ``pixel_values`` holds one row per
  tile, ``(tiles, 3, S, S)``, and each tile is ``image_seq_length`` placeholder tokens.  The family reports each
  image's grid as ``(tiles, rows, cols)`` (:meth:`InternVLFamily.image_grid`), so a batch's pixel rows follow their
  prompts, and the model-input frame is the tile canvas ``cols*S x rows*S``.
* **The forward takes only** ``input_ids``, ``attention_mask`` and ``pixel_values`` (1-D rotary positions, no
  ``mm_token_type_ids``), so shared-prefix scoring (which needs ``get_rope_index``) does not apply: scoring takes
  the naive pass.
* **One resolution.**  The resolution knobs are the tiling's (``crop_to_patches``, ``min_patches``,
  ``max_patches``); ``model.max_pixels`` / ``min_pixels`` become tile counts (pixels / S²), and the same dict goes
  to the trainer's processor and to vLLM's (``mm_processor_kwargs``).

The processor needs a video processor (torchvision) upstream; :class:`ImageOnlyInternVLProcessor` keeps only the
image processor and the tokenizer.  The tokenizer names ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` and ``<video>``
through ``extra_special_tokens``, which the processor reads.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from typing import Any

from transformers import ProcessorMixin
from transformers.models.internvl.processing_internvl import InternVLProcessor

from syngrpo.models.family import CoordinateConvention
from syngrpo.models.tiny_policy import TinyFamily
from syngrpo.perception.geometry import ImageTransform

#: InternVL3's special tokens (Qwen2.5's chat tokens, then InternVL's own), in its order
INTERNVL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>",
)

#: the named tokens the processor reads from the tokenizer (``tokenizer.start_image_token`` ...)
INTERNVL_NAMED_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}

#: placed only by the processor
INTERNVL_VISION_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")

#: InternVL3's chat shape: ``<|im_start|>role\n...<|im_end|>\n`` turns, an image part is ``<IMG_CONTEXT>\n``
#: (the processor expands it to ``<img>`` + image_seq_length x tiles ``<IMG_CONTEXT>`` + ``</img>``)
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` without the video processor (no torchvision)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs: Any) -> None:
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_seq_length = image_seq_length
        self.start_image_token = tokenizer.start_image_token
        self.end_image_token = tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token = tokenizer.context_image_token
        self.video_token = tokenizer.video_token
        self.image_token_id = tokenizer.context_image_token_id
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")


class InternVLFamily(TinyFamily):
    name = "internvl"
    model_types = ("internvl",)
    coordinates = CoordinateConvention(
        "relative", 1000, source="OpenGVLab/InternVL internvl_chat/eval/refcoco/evaluate_grounding.py: "
                                 "[[x1,y1,x2,y2]] / 1000 * (W, H, W, H)")
    suppress_tokens = INTERNVL_VISION_TOKENS
    eos_tokens = ("<|im_end|>", "<|endoftext|>")
    token_type_keys = ()
    shared_prefix = False
    dense_vision_pretrain = False
    model_input_keys = ("input_ids", "attention_mask", "pixel_values")
    special_tokens = INTERNVL_SPECIAL_TOKENS
    eos_token = "<|im_end|>"
    pad_token = "<|endoftext|>"
    chat_template = INTERNVL_CHAT_TEMPLATE
    example_checkpoint = "OpenGVLab/InternVL3-1B-hf"

    def model_class(self) -> Any:
        from transformers import InternVLForConditionalGeneration

        return InternVLForConditionalGeneration

    def processor_class(self) -> Any:
        return ImageOnlyInternVLProcessor

    # ---- tiles ------------------------------------------------------------------------------------------
    def vision_sizes(self, image_processor: Any) -> tuple[int, int]:
        """``(tile side, 1)``: a grid cell is one tile of the vision tower's input size."""
        return int(_tile_side(image_processor)), 1

    def tiling(self, bundle: Any, *, max_pixels: int | None = None, min_pixels: int | None = None) -> dict[str, Any]:
        """The tiling the processor applies: its own, with ``max_pixels`` / ``min_pixels`` as tile counts."""
        ip = bundle.processor.image_processor
        area = _tile_side(ip) ** 2
        high = max_pixels if max_pixels is not None else bundle.max_pixels
        low = min_pixels if min_pixels is not None else bundle.min_pixels
        most = max(1, int(high) // area) if high is not None else int(getattr(ip, "max_patches", 12))
        least = max(1, int(low) // area) if low is not None else int(getattr(ip, "min_patches", 1))
        if least > most:
            raise ValueError(f"min_pixels gives {least} tiles of {area} pixels, more than max_pixels' {most}")
        return {"crop_to_patches": bool(getattr(ip, "crop_to_patches", True)), "min_patches": least,
                "max_patches": most}

    def image_kwargs(self, bundle: Any, *, max_pixels: int | None = None, min_pixels: int | None = None,
                     always: bool = False) -> dict[str, Any]:
        """The tiling as processor keyword arguments (the same for the trainer's processor and vLLM's)."""
        if always or any(v is not None for v in (max_pixels, min_pixels, bundle.max_pixels, bundle.min_pixels)):
            return self.tiling(bundle, max_pixels=max_pixels, min_pixels=min_pixels)
        return {}

    def image_grid(self, encoding: Any, images: Sequence[Any], bundle: Any, image_kwargs: dict[str, Any]) -> Any:
        """``(tiles, rows, cols)`` per image: tiles from the placeholders (each image's run of ``<IMG_CONTEXT>``,
        between its ``<img>`` and ``</img>``), the canvas from the processor's rule."""
        import torch
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        processor = bundle.processor
        per_tile = int(processor.image_seq_length)
        counts = [n for row in (encoding["input_ids"] == processor.image_token_id).tolist() for n in _runs(row)]
        tiling = {**self.tiling(bundle), **image_kwargs}
        side = _tile_side(processor.image_processor)
        rows = []
        for image, n in zip(images, counts, strict=True):
            tiles = int(n) // per_tile
            cols, nrows = 1, 1
            if tiling["crop_to_patches"] and tiles > 1:
                cols, nrows = get_optimal_tiled_canvas((image.height, image.width), (side, side),
                                                       tiling["min_patches"], tiling["max_patches"])
            rows.append([tiles, nrows, cols])
        return torch.tensor(rows, dtype=torch.long)

    def pixel_rows(self, grid: Any) -> list[int]:
        return [int(n) for n in grid[:, 0].tolist()]

    def image_token_count(self, grid_row: Sequence[int], bundle: Any) -> int:
        return int(grid_row[0]) * int(bundle.processor.image_seq_length)

    def input_frame(self, image_width: int, image_height: int, grid_thw: Sequence[int], patch_size: int) -> ImageTransform:
        """Original image -> the tile canvas (``cols`` x ``rows`` tiles of ``patch_size``, the tile side)."""
        _, rows, cols = (int(v) for v in grid_thw)
        return ImageTransform.resize(image_width, image_height, cols * patch_size, rows * patch_size)

    def max_image_tokens(self, bundle: Any) -> int:
        """Placeholders of the largest image: ``max_patches`` tiles + the thumbnail, plus ``<img>`` / ``</img>``."""
        most = self.tiling(bundle)["max_patches"]
        return (most + (1 if most > 1 else 0)) * int(bundle.processor.image_seq_length) + 2

    # ---- the tiny build --------------------------------------------------------------------------------
    def tiny_tokenizer(self, vocab_size: int) -> Any:
        """The shared BPE, reloaded with InternVL's named image tokens (``extra_special_tokens``)."""
        from transformers import Qwen2Tokenizer

        tokenizer = super().tiny_tokenizer(vocab_size)
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            named = Qwen2Tokenizer.from_pretrained(tmp, extra_special_tokens=dict(INTERNVL_NAMED_TOKENS))
        named.chat_template = self.chat_template
        return named

    def tiny_config(self, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int) -> Any:
        """A Qwen2 text model; an InternViT of 32-pixel tiles, 8-pixel patches, pixel shuffle 0.5 (4 tokens a tile)."""
        from transformers import InternVLConfig

        pad, eos = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
        text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=text_hidden,
                    intermediate_size=2 * text_hidden, num_hidden_layers=layers, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=pad, eos_token_id=eos)
        vision = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_depth,
                      num_attention_heads=max(1, vision_hidden // 16), image_size=[32, 32], patch_size=[8, 8])
        config = InternVLConfig(text_config=text, vision_config=vision,
                                image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                                downsample_ratio=0.5, image_seq_length=4, tie_word_embeddings=False)
        config.eos_token_id = eos
        config.pad_token_id = pad
        return config

    def tiny_generation(self, tokenizer) -> dict[str, Any]:
        eos = [tokenizer.convert_tokens_to_ids(t) for t in self.eos_tokens]
        return dict(eos_token_id=eos, pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))

    def tiny_image_processor(self, max_pixels: int) -> Any:
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        return GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                        max_patches=max(1, min(6, max_pixels // (32 * 32))))  # max_num=6: InternVL eval default

    def build_tiny(self, out_dir, *, seed: int = 0, **options: Any):
        out = super().build_tiny(out_dir, seed=seed, **options)
        processor = self.processor_class().from_pretrained(str(out))
        if processor.image_seq_length != 4:  # the processor's default is the real models' 256
            processor.image_seq_length = 4
            processor.save_pretrained(out)
        return out


def _runs(flags: list[bool]) -> list[int]:
    """Lengths of the runs of true values: one per image of a prompt (``<img>`` and ``</img>`` part them)."""
    runs, n = [], 0
    for flag in flags:
        if flag:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


def _tile_side(image_processor: Any) -> int:
    size = image_processor.size
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return int(get("height") or get("shortest_edge"))
