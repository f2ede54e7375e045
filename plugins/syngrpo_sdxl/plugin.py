"""Entry-point module: the ``sdxl_controlnet`` synthesizer (diffusers; extra ``sdxl``)."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def sdxl_controlnet(**options):
    """SDXL + ControlNet inpaint pipeline repainting the background (the paper's outpainter; GPU)."""
    from syngrpo_sdxl.outpaint import SDXLControlNetSynthesizer

    return SDXLControlNetSynthesizer(**options)


@hookimpl
def register_synthesizers(register):
    register("sdxl_controlnet", sdxl_controlnet)
