"""A tiny, randomly initialised SAM (transformers' ``SamModel``) with its processor, built offline.

~100k parameters at a 128-pixel input; saved with ``save_pretrained`` so the ``sam`` segmenter
loads it the way it loads ``facebook/sam-vit-base``.  Registered as the tiny model ``sam``
(``syngrpo make-tiny --what sam``)::

    path = build_tiny_sam(tmp / "sam")
    registry.create("segmenters", "sam", model=str(path), local_files_only=True)

The processor uses ``SamImageProcessorPil`` (no torchvision).  Masks are noise; a box prompt
takes ~35 ms on a CPU.
"""

from __future__ import annotations

from pathlib import Path

#: the tiny model's input side (images are resized so the longer side is this, then padded)
IMAGE_SIZE = 128
PATCH_SIZE = 16


def build_tiny_sam(out_dir: str | Path, seed: int = 0) -> Path:
    """Build and save model + processor into ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                             image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, output_channels=32, window_size=4,
                             global_attn_indexes=[1], num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                    mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    # Mask logits come out at 4x the embedding grid: 8x8 patches -> 32x32 masks.
    low_res = IMAGE_SIZE // PATCH_SIZE * 4
    image_processor = SamImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE}, pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        mask_size={"longest_edge": low_res}, mask_pad_size={"height": low_res, "width": low_res},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(out)
    model.save_pretrained(out)
    return out
