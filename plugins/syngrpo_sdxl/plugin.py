"""Entry-point module: the ``sdxl_controlnet`` synthesizer and its tiny model ``sdxl`` (diffusers; extra ``sdxl``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from syngrpo.errors import require
from syngrpo.hookspecs import hookimpl
from syngrpo_sdxl.tiny import build_tiny_sdxl_controlnet


class SDXLJobOptions(BaseModel):
    """Per-job options of ``sdxl_controlnet`` and their bounds (the server refuses others with a 422)."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=150, description="denoising steps")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0)
    controlnet_conditioning_scale: float | None = Field(None, ge=0.0, le=5.0)
    strength: float | None = Field(None, gt=0.0, le=1.0)
    negative_prompt: str | None = Field(None, max_length=1000)
    prompt_template: str | None = Field(None, max_length=1000)
    size: int | None = Field(None, ge=64, le=2048, description="longer side of the working size in pixels (rounded "
                             "to the synthesizer's multiple); 256 makes a CPU run take seconds instead of minutes")


def sdxl_controlnet(**options):
    """SDXL + ControlNet inpaint pipeline repainting the background (the paper's outpainter; GPU)."""
    from syngrpo_sdxl.outpaint import SDXLControlNetSynthesizer

    return SDXLControlNetSynthesizer(**options)


sdxl_controlnet.job_options = SDXLJobOptions  # type: ignore[attr-defined]


@hookimpl
def register_synthesizers(register):
    register("sdxl_controlnet", sdxl_controlnet)


def tiny_sdxl(out_dir: str | Path, *, seed: int = 0) -> Path:
    """A tiny random SDXL + ControlNet inpaint pipeline that sdxl_controlnet loads (extra sdxl)."""
    require("diffusers", extra="sdxl", what="the tiny SDXL ControlNet model")
    return build_tiny_sdxl_controlnet(out_dir, seed)


@hookimpl
def register_tiny_models(register):
    register("sdxl", tiny_sdxl, description="a tiny random SDXL + ControlNet inpaint pipeline that sdxl_controlnet "
                                            "loads (pip install 'syngrpo[sdxl]')")
