"""A tiny, randomly initialised SDXL + ControlNet inpaint pipeline, built offline from configs.

Same classes as the real model (UNet2DConditionModel with SDXL's ``text_time`` conditioning,
ControlNetModel made from it, AutoencoderKL, two CLIP text encoders, Euler scheduler), a few
hundred thousand parameters, saved with ``save_pretrained`` so the ``sdxl_controlnet`` synthesizer
loads it with the very ``from_pretrained`` call it uses for real weights.  Registered as the tiny
model ``sdxl`` (``syngrpo make-tiny --what sdxl``)::

    path = build_tiny_sdxl_controlnet(tmp / "sdxl")
    registry.create("synthesizers", "sdxl_controlnet", model=str(path), controlnet=None,
                    local_files_only=True, size=128, steps=2)

The tokenizer is a byte-level CLIP vocabulary written here (no hub access).  Outputs are noise:
the model exists to run the real code paths in tests, quickly (2 steps at 128 px ~0.1-1 s).
"""

from __future__ import annotations

import json
from pathlib import Path


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's mapping)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_clip_vocab(out_dir: Path) -> tuple[Path, Path]:
    """A CLIP tokenizer vocabulary of single bytes (with and without ``</w>``) and no merges."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for c in _byte_chars():
        vocab[c] = len(vocab)
    for c in _byte_chars():
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_path, merges_path


def build_tiny_sdxl_controlnet(out_dir: str | Path, seed: int = 0) -> Path:
    """Build and save the tiny pipeline into ``out_dir``; returns ``out_dir`` (a pipeline directory)."""
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerDiscreteScheduler,
        StableDiffusionXLControlNetInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_clip_vocab(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    n_vocab = len(tokenizer)
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])

    def text_config() -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=n_vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77, bos_token_id=bos,
                              eos_token_id=eos, pad_token_id=eos, projection_dim=32)

    text_encoder = CLIPTextModel(text_config())
    text_encoder_2 = CLIPTextModelWithProjection(text_config())
    # cross_attention_dim = hidden of encoder 1 + hidden of encoder 2 (SDXL concatenates them);
    # the text_time embedding takes 6 time ids x addition_time_embed_dim + the pooled projection.
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    )
    # The control embedding must downsample like the 4-level VAE (x8): four channel entries.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    vae = AutoencoderKL(
        block_out_channels=[8, 16, 16, 16], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, norm_num_groups=8, sample_size=128, force_upcast=False,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLControlNetInpaintPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler,
    )
    pipe.save_pretrained(out)
    return out
