"""The ``sdxl_controlnet`` synthesizer: diffusers' SDXL ControlNet inpaint pipeline as an outpainter.

For each request the pipeline gets the image (``image``), a mask that is white where the
background is to be repainted (``mask_image`` = inverse of the keep mask) and a control image
that shows the kept foreground with the rest blanked (``control_image``; white by default, which
is what inpaint/outpaint ControlNets such as ``destitech/controlnet-inpaint-dreamer-sdxl``
expect).  The pipeline re-encodes the foreground through its VAE, so
:func:`syngrpo.synthesis.pipeline.run_pipeline` pastes the original pixels back afterwards.

Weights: ``model`` is an SDXL pipeline id or local directory; ``controlnet`` a ControlNet id or
directory (omit it when ``model`` is a full saved ControlNet pipeline, as the tiny test model
is).  fp16 on CUDA by default.  Requests are batched when they share a working size.

On a CPU the cost is the working size (the longer side, ``size``, default 1024) and the denoising
``steps`` (default 30): both are per-job options, so a CPU check of a config runs with
``{"size": 256, "steps": 4}`` (docs/data-server.md, "On a CPU").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image

from syngrpo.errors import require
from syngrpo.synthesis.pipeline import SynthesisRequest, check_deadline

SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "pndm": "PNDMScheduler",
}
#: per-request options a job may set (``options`` of the job), with their constructor defaults
REQUEST_OPTIONS = ("steps", "guidance_scale", "controlnet_conditioning_scale", "strength", "negative_prompt",
                   "prompt_template", "size")


def _deadline_callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
    check_deadline()
    return callback_kwargs


def _need_diffusers() -> Any:
    return require("diffusers", extra="sdxl", what="the sdxl_controlnet synthesizer")


def working_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    """Scale so the longer side is ``size``, both sides rounded to a multiple of ``multiple``."""
    scale = size / max(width, height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


class SDXLControlNetSynthesizer:
    """Outpaints the background with SDXL + ControlNet (see the module doc for the inputs)."""

    def __init__(
        self,
        *,
        model: str = "stabilityai/stable-diffusion-xl-base-1.0",
        controlnet: str | None = "destitech/controlnet-inpaint-dreamer-sdxl",
        vae: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        variant: str | None = None,
        scheduler: str | None = None,
        steps: int = 30,
        guidance_scale: float = 7.0,
        controlnet_conditioning_scale: float = 0.6,
        strength: float = 1.0,
        negative_prompt: str = "blurry, low quality, distorted, text, watermark",
        prompt_template: str = "{description}",
        size: int = 1024,
        multiple: int = 64,
        control_fill: tuple[int, int, int] | list[int] = (255, 255, 255),
        max_batch_size: int = 4,
        local_files_only: bool = False,
        cpu_offload: bool = False,
        progress_bar: bool = False,
        pipeline: Any = None,
    ) -> None:
        diffusers = _need_diffusers()
        if pipeline is not None:  # an already-built pipeline (scripts/gpu-check builds one from configs)
            pipe = pipeline.to(device)
        else:
            pipe = self._load(diffusers, model=model, controlnet=controlnet, vae=vae, device=device, dtype=dtype,
                              variant=variant, local_files_only=local_files_only, cpu_offload=cpu_offload)
        if scheduler:
            if scheduler not in SCHEDULERS:
                raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULERS)}")
            cls = getattr(diffusers, SCHEDULERS[scheduler])
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=not progress_bar)
        self.pipe = pipe
        self.device = device
        self.defaults = {
            "steps": int(steps), "guidance_scale": float(guidance_scale),
            "controlnet_conditioning_scale": float(controlnet_conditioning_scale), "strength": float(strength),
            "negative_prompt": negative_prompt, "prompt_template": prompt_template, "size": int(size),
        }
        self.size = int(size)
        self.multiple = int(multiple)
        self.control_fill = tuple(int(c) for c in control_fill)
        self.max_batch_size = int(max_batch_size)

    @staticmethod
    def _load(diffusers: Any, *, model: str, controlnet: str | None, vae: str | None, device: str, dtype: str,
              variant: str | None, local_files_only: bool, cpu_offload: bool) -> Any:
        """The pipeline from a hub id or directory (+ a separate ControlNet / VAE), on ``device``."""
        import torch

        if dtype == "auto":
            torch_dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        common: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_files_only}
        if variant:
            common["variant"] = variant
        parts: dict[str, Any] = {}
        if controlnet:
            parts["controlnet"] = diffusers.ControlNetModel.from_pretrained(controlnet, **common)
        if vae:
            parts["vae"] = diffusers.AutoencoderKL.from_pretrained(vae, **common)
        pipe = diffusers.StableDiffusionXLControlNetInpaintPipeline.from_pretrained(model, **parts, **common)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
            return pipe
        return pipe.to(device)

    def _options(self, req: SynthesisRequest) -> dict[str, Any]:
        unknown = sorted(set(req.options) - set(REQUEST_OPTIONS))
        if unknown:
            raise ValueError(f"unknown sdxl_controlnet option(s) {unknown}; per-job options: {', '.join(REQUEST_OPTIONS)}")
        return {**self.defaults, **req.options}

    def _inputs(self, req: SynthesisRequest, size: tuple[int, int]) -> tuple[Image.Image, Image.Image, Image.Image]:
        image = req.image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        keep = req.keep_mask.convert("L").resize(size, Image.Resampling.NEAREST)
        keep_arr = np.asarray(keep) >= 128
        repaint = Image.fromarray(np.where(keep_arr, 0, 255).astype(np.uint8), mode="L")
        control = np.asarray(image).copy()
        control[~keep_arr] = self.control_fill
        return image, repaint, Image.fromarray(control, mode="RGB")

    def synthesize(self, requests: list[SynthesisRequest]) -> list[Image.Image]:
        import torch

        out: list[Image.Image | None] = [None] * len(requests)
        groups: dict[tuple[tuple[int, int], str], list[int]] = {}
        for i, req in enumerate(requests):
            opts = self._options(req)  # a job's own ``size`` (e.g. 256 on a CPU) sets its working size
            size = working_size(req.image.width, req.image.height, int(opts["size"]), self.multiple)
            key = (size, json.dumps(opts, sort_keys=True))
            groups.setdefault(key, []).append(i)
        for (size, opts_json), idx in groups.items():
            opts = json.loads(opts_json)
            for start in range(0, len(idx), self.max_batch_size):
                chunk = idx[start : start + self.max_batch_size]
                images, masks, controls = zip(*(self._inputs(requests[i], size) for i in chunk), strict=True)
                prompts = [opts["prompt_template"].format(description=requests[i].description) for i in chunk]
                generators = [torch.Generator(device="cpu").manual_seed(int(requests[i].seed)) for i in chunk]
                result = self.pipe(
                    prompt=prompts,
                    negative_prompt=[opts["negative_prompt"]] * len(chunk),
                    image=list(images),
                    mask_image=list(masks),
                    control_image=list(controls),
                    width=size[0],
                    height=size[1],
                    num_inference_steps=int(opts["steps"]),
                    guidance_scale=float(opts["guidance_scale"]),
                    controlnet_conditioning_scale=float(opts["controlnet_conditioning_scale"]),
                    strength=float(opts["strength"]),
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=_deadline_callback,  # a timed-out job stops between steps
                )
                for i, img in zip(chunk, result.images, strict=True):
                    orig = requests[i].image
                    out[i] = img.convert("RGB").resize(orig.size, Image.Resampling.BICUBIC)
        return [img for img in out if img is not None]
