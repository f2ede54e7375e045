"""Entry-point module: the ``sdxl_controlnet`` synthesizer (diffusers; extra ``sdxl``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from syngrpo.hookspecs import hookimpl


class SDXLJobOptions(BaseModel):
    """Per-job options of ``sdxl_controlnet`` and their bounds (the server refuses others with a 422)."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=150, description="denoising steps")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0)
    controlnet_conditioning_scale: float | None = Field(None, ge=0.0, le=5.0)
    strength: float | None = Field(None, gt=0.0, le=1.0)
    negative_prompt: str | None = Field(None, max_length=1000)
    prompt_template: str | None = Field(None, max_length=1000)


def sdxl_controlnet(**options):
    """SDXL + ControlNet inpaint pipeline repainting the background (the paper's outpainter; GPU)."""
    from syngrpo_sdxl.outpaint import SDXLControlNetSynthesizer

    return SDXLControlNetSynthesizer(**options)


sdxl_controlnet.job_options = SDXLJobOptions  # type: ignore[attr-defined]


@hookimpl
def register_synthesizers(register):
    register("sdxl_controlnet", sdxl_controlnet)
