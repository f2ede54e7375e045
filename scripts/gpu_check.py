"""The body of ``scripts/gpu-check``: the real-size GPU paths, each timed and measured, in one short run.

Run by a person (or a session) with one GPU, on a machine with no network:

* **policy_hf**: the Qwen2.5-VL-3B architecture (the published figures syngrpo ships) with random
  weights, ``model.dtype: bfloat16``, built on the GPU, tokenizer = syngrpo's locally trained
  tiny tokenizer (its ids are far below the 151,936-entry vocabulary; the config's special-token
  ids are set to the tokenizer's). Two Syn-GRPO steps through the real ``Trainer.train_step``
  with the ``hf`` engine and synthesis through the ``inprocess`` transport; peak CUDA memory
  (``torch.cuda.max_memory_allocated``) against ``syngrpo plan`` for the same config, and tokens
  per second (sampling: generated tokens / rollout time; update: scored tokens / update time);
* **policy_fsdp**: the same with ``parallel.strategy: fsdp`` in a one-rank process group;
  reported "not available" when this trainer does not shard the policy;
* **sdxl**: the SDXL ControlNet inpaint pipeline at real SDXL sizes (UNet, ControlNet made from
  it, VAE, both CLIP text encoders; configs from the diffusers / transformers classes), random
  fp16 weights, through the ``sdxl_controlnet`` synthesizer at 1024 px, 4 steps: seconds per image;
* **sam**: SAM ViT-B (transformers ``SamModel``, the default config is ViT-B) prompted with boxes
  through the ``sam`` segmenter: seconds per image;
* **quickstart**: the README's main job (``syngrpo train``, the embedded quickstart config) with
  ``model.device`` set to this device, in a subprocess: the whole run (vision pre-training, SFT,
  Syn-GRPO against a spawned data server, both evaluations) and its ``summary.md`` verdict. Needs
  syngrpo installed (the plugins come from its entry points); the smoke run shrinks every phase.

Each part runs in its own ``try``, so one failure keeps the others' figures, within a total time
budget. ``--cpu-smoke`` runs the same code at tiny sizes on the CPU (CI runs it so it cannot rot).
Figures go to a JSON file; a markdown table for docs/performance.md is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("policy_hf", "policy_fsdp", "sdxl", "sam", "quickstart")


def _importable_from_checkout() -> None:
    """Make syngrpo, its plugins and tasks importable from this checkout when it is not installed."""
    try:
        import syngrpo  # noqa: F401
    except ImportError:
        for path in (ROOT / "plugins", ROOT, ROOT / "examples" / "syngrpo-counting"):
            sys.path.insert(0, str(path))


_REGISTRY: Any = None


def registry() -> Any:
    """The installed plugins; from a bare checkout, the modules pyproject.toml's entry points name."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _registry()
    return _REGISTRY


def entry_point_modules() -> list[str]:
    """The plugin modules pyproject.toml's ``syngrpo`` entry-point group names (for a checkout that is not installed)."""
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.entry-points.syngrpo]", 1)[1].split("\n[", 1)[0]
    return re.findall(r'^\s*[\w-]+\s*=\s*"([\w.]+)"', section, flags=re.M)


def _registry() -> Any:
    import importlib
    from importlib.metadata import entry_points

    from syngrpo.plugins import ENTRY_POINT_GROUP, get_registry
    from syngrpo.testing import registry_with

    if list(entry_points(group=ENTRY_POINT_GROUP)):
        return get_registry()
    return registry_with(*(importlib.import_module(m) for m in entry_point_modules()))


# ---- sizes ------------------------------------------------------------------------------------------------


def sizes(smoke: bool) -> dict[str, Any]:
    """Real sizes on a GPU; the same code at tiny sizes for ``--cpu-smoke``."""
    if smoke:
        return {"device": "cpu", "real": False, "policy": "tiny", "image_size": 112, "max_pixels": 112 * 112, "batch": 2,
                "generations": 2, "new_tokens": 16, "sdxl_px": 128, "sdxl_steps": 2, "sam_px": 128}
    return {"device": "cuda", "real": True, "policy": "Qwen/Qwen2.5-VL-3B-Instruct", "image_size": 640, "max_pixels": 640 * 640,
            "batch": 2, "generations": 6, "new_tokens": 128, "sdxl_px": 1024, "sdxl_steps": 4, "sam_px": 1024}


# ---- the policy ---------------------------------------------------------------------------------------------


def build_policy(out: Path, size: dict[str, Any]) -> Path:
    """A random policy directory: the architecture's config with the tiny Qwen2.5-VL tokenizer's special-token ids.

    The tokenizer and processor come from the ``qwen2_5_vl`` family's own tiny builder (trained locally, no
    download); at real size the model is the shipped architecture, built with random weights where it runs.
    """
    import shutil

    import torch
    from transformers import AutoConfig, GenerationConfig

    from syngrpo.models.architecture import ARCHITECTURES_DIR, SHIPPED
    from syngrpo.models.family import get_family

    family = get_family("qwen2_5_vl")
    tiny = Path(family.build_tiny(out.parent / f"{out.name}-tiny", seed=0))
    if not size["real"]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(tiny), str(out))
        return out
    processor = family.load_processor(tiny)
    tokenizer = processor.tokenizer
    special = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
               "<|endoftext|>", "<|im_end|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    data = json.loads((ARCHITECTURES_DIR / SHIPPED[size["policy"]]).read_text(encoding="utf-8"))
    data.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                vision_token_id=ids["<|vision_pad|>"], bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    assert max(ids.values()) < config.text_config.vocab_size
    torch.manual_seed(0)
    with torch.device(size["device"]):  # built where it runs: a 3B random init on a CPU takes minutes
        model = family.model_class()._from_config(config, dtype=torch.bfloat16
                                                  if size["device"] == "cuda" else torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    model.save_pretrained(out)
    del model
    if size["device"] == "cuda":
        torch.cuda.empty_cache()
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": size["max_pixels"]}
    processor.save_pretrained(out)
    shutil.rmtree(tiny, ignore_errors=True)
    return out


def _one_rank_group(device: str) -> None:
    """A one-process group (FSDP needs one even on a single GPU)."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)


def policy_step(policy_dir: Path, work: Path, size: dict[str, Any], *, fsdp: bool) -> dict[str, Any]:
    """Two Syn-GRPO steps through the real trainer; figures of the second, peak memory of both."""
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.models.architecture import load_architecture
    from syngrpo.scale.plan import PlanInputs, plan_memory
    from syngrpo.train.trainer import Trainer

    cuda = size["device"] == "cuda"
    sets = [f"model.policy={policy_dir}", f"model.device={size['device']}",
            f"model.dtype={'bfloat16' if cuda else 'float32'}", f"model.gradient_checkpointing={str(cuda).lower()}",
            f"model.max_pixels={size['max_pixels']}", "data.task=rec", "data.toy.n_train=8", "data.toy.n_eval=2",
            f"data.toy.image_size={size['image_size']}", "rollout.engine=hf",
            f"rollout.num_generations={size['generations']}", f"rollout.max_new_tokens={size['new_tokens']}",
            "synthesis.mode=async", "synthesis.transport=inprocess", f"optim.batch_size={size['batch']}",
            "optim.max_steps=2", "optim.lr=1e-6", "sft.enabled=false", "eval.at_end=false", "logging.progress=false",
            "logging.tensorboard=false", "logging.plots=false", "logging.gallery=false", "logging.samples_every=0"]
    if fsdp:
        sets.append("parallel.strategy=fsdp")
    try:
        cfg = load_config(TrainConfig, None, sets)
    except ConfigError as exc:
        return {"status": "not available", "why": f"this syngrpo has no parallel.strategy=fsdp ({exc})"}
    reg = registry()
    transport = reg.create("transports", "inprocess", registry=reg, synthesizer="procedural", segmenter="box",
                           workers=1)
    if fsdp:
        _one_rank_group(size["device"])
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {}
    with Trainer(cfg, work / ("fsdp" if fsdp else "hf"), transport=transport, registry=reg) as trainer:
        try:
            trainer.setup()
        except ConfigError as exc:
            if not fsdp:
                raise
            return {"status": "not available", "why": f"this trainer refuses fsdp on one process: {exc}"}
        if fsdp:
            from torch.distributed.tensor import DTensor

            if not any(isinstance(p, DTensor) for p in trainer.bundle.model.parameters()):
                return {"status": "not available",
                        "why": "parallel.strategy=fsdp is accepted but this trainer does not shard the policy"}
        # the trainer resets the peak counter at each phase: keep the setup's (loading, warm start) first
        phase_peaks: list[float] = [torch.cuda.max_memory_allocated() / 2**30] if cuda else []
        for step in (1, 2):
            t0 = time.perf_counter()
            metrics = trainer.train_step(step)
            seconds = time.perf_counter() - t0
            phase_peaks += [v for k, v in metrics.items() if k.startswith("memory/") and k.endswith("_peak_gib")]
        rows = size["batch"] * size["generations"]
        generated = metrics["completion/mean_length"] * rows
        out.update(step_seconds=round(seconds, 3), rollout_seconds=round(metrics["time/rollout"], 3),
                   update_seconds=round(metrics["time/update"], 3), rows=rows,
                   sampled_tokens_per_s=round(generated / max(metrics["time/rollout"], 1e-9), 1),
                   loss=metrics["loss"], grad_norm=metrics["grad_norm"],
                   synthesis_submitted=metrics.get("synthesis/submitted_total"))
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 80 * 2**30
    plan = plan_memory(load_architecture(str(policy_dir)),
                       PlanInputs.from_config(cfg, gpus=1, gpu_memory_gib=total / 2**30))
    out.update(plan_peak_gib=round(plan.peak_gib, 3), plan_strategy=plan.strategy,
               plan_parts={p.name: [round(p.bytes / 2**30, 3), p.phase] for p in plan.parts})
    if cuda:
        # the run's peak: the largest of the setup's and both steps' phase peaks
        peak = max([torch.cuda.max_memory_allocated(), *(g * 2**30 for g in phase_peaks)])
        out.update(peak_gib=round(peak / 2**30, 2), peak_over_plan=round(peak / plan.peak_bytes, 3))
        for phase in ("rollout", "update"):  # the trainer's per-phase peaks of the second step
            measured = metrics.get(f"memory/{phase}_peak_gib")
            if measured is not None:
                out[f"{phase}_peak_gib"] = round(measured, 2)
                out[f"{phase}_over_plan"] = round(measured * 2**30 / plan.phase_bytes(phase), 3)
    out["status"] = "ok"
    return out


# ---- SDXL ControlNet inpaint ----------------------------------------------------------------------------------


def sdxl_pipeline(size: dict[str, Any]) -> Any:
    """SDXL + ControlNet inpaint with random weights: SDXL-base's published sizes, or tiny ones for the smoke run."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerDiscreteScheduler,
        StableDiffusionXLControlNetInpaintPipeline,
        UNet2DConditionModel,
    )
    from syngrpo_sdxl.tiny import write_clip_vocab
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    real = size["real"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_clip_vocab(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])

    def clip(hidden: int, layers: int, heads: int, act: str) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408 if real else len(tokenizer), hidden_size=hidden,
                              intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              max_position_embeddings=77, hidden_act=act, projection_dim=hidden,
                              bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)

    if real:  # stabilityai/stable-diffusion-xl-base-1.0: CLIP ViT-L + OpenCLIP bigG, the SDXL UNet and VAE
        te1, te2 = clip(768, 12, 12, "quick_gelu"), clip(1280, 32, 20, "gelu")
        unet_kw = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
                       attention_head_dim=(5, 10, 20), cross_attention_dim=2048, addition_time_embed_dim=256,
                       projection_class_embeddings_input_dim=2816, sample_size=128, norm_num_groups=32,
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                      sample_size=1024, scaling_factor=0.13025, force_upcast=False)
        control_kw: dict[str, Any] = {}
        dtype = torch.float16
    else:  # the tiny sizes of syngrpo_sdxl.tiny
        te1, te2 = clip(32, 2, 4, "gelu"), clip(32, 2, 4, "gelu")
        unet_kw = dict(block_out_channels=(32, 64), layers_per_block=1, transformer_layers_per_block=(1, 1),
                       attention_head_dim=(2, 4), cross_attention_dim=64, addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=6 * 8 + 32, sample_size=16, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
        vae_kw = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=128,
                      force_upcast=False)
        control_kw = {"conditioning_embedding_out_channels": (8, 8, 16, 16)}
        dtype = torch.float32
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # weights are drawn in their final dtype, where they will run
    try:
        with torch.device(size["device"]):
            unet = UNet2DConditionModel(in_channels=4, out_channels=4, addition_embed_type="text_time",
                                        use_linear_projection=True, **unet_kw)
            controlnet = ControlNetModel.from_unet(unet, **control_kw)
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                down_block_types=["DownEncoderBlock2D"] * 4,
                                up_block_types=["UpDecoderBlock2D"] * 4, **vae_kw)
            text_encoder, text_encoder_2 = CLIPTextModel(te1), CLIPTextModelWithProjection(te2)
    finally:
        torch.set_default_dtype(default)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLControlNetInpaintPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler)


def _scene(px: int) -> tuple[Any, Any, list[list[float]]]:
    """An image with two labelled boxes and the keep mask of the boxes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (px, px), (200, 205, 210))
    draw = ImageDraw.Draw(image)
    boxes = [[0.1 * px, 0.2 * px, 0.4 * px, 0.6 * px], [0.55 * px, 0.5 * px, 0.9 * px, 0.85 * px]]
    draw.ellipse(boxes[0], fill=(220, 40, 40))
    draw.rectangle(boxes[1], fill=(40, 90, 230))
    keep = Image.new("L", (px, px), 0)
    for b in boxes:
        ImageDraw.Draw(keep).rectangle(b, fill=255)
    return image, keep, boxes


def sdxl_check(size: dict[str, Any]) -> dict[str, Any]:
    import torch

    from syngrpo.synthesis.pipeline import SynthesisRequest

    reg = registry()
    pipe = sdxl_pipeline(size)
    params = sum(p.numel() for m in (pipe.unet, pipe.controlnet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
                 for p in m.parameters())
    synth = reg.create("synthesizers", "sdxl_controlnet", pipeline=pipe, device=size["device"],
                       steps=size["sdxl_steps"], size=size["sdxl_px"], max_batch_size=1)
    image, keep, boxes = _scene(size["sdxl_px"])
    req = SynthesisRequest(image=image, keep_mask=keep, boxes=boxes, labels=["ball", "box"],
                           description="a kitchen table by a window", seed=0)
    synth.synthesize([req])  # warm-up (kernels, allocator)
    if size["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = synth.synthesize([req])
    if size["device"] == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {"status": "ok", "px": size["sdxl_px"], "steps": size["sdxl_steps"], "params": params,
              "seconds_per_image": round(seconds, 3), "out_size": list(out[0].size)}
    if size["device"] == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


# ---- SAM --------------------------------------------------------------------------------------------------------


def sam_check(size: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch
    from syngrpo_sam.tiny import build_tiny_sam
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    out = work / "sam"
    if size["real"]:
        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(out)  # transformers' default SamConfig is ViT-B
        SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(out)
    else:
        build_tiny_sam(out)
    seg = registry().create("segmenters", "sam", model=str(out), local_files_only=True, device=size["device"])
    params = sum(p.numel() for p in seg.model.parameters())
    image, _, boxes = _scene(size["sam_px"])
    seg.segment([image], [boxes])  # warm-up
    if size["device"] == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    masks = seg.segment([image], [boxes])
    if size["device"] == "cuda":
        torch.cuda.synchronize()
    return {"status": "ok", "params": params, "boxes": len(boxes), "seconds_per_image": round(time.perf_counter() - t0, 4),
            "mask_size": list(masks[0].size)}


# ---- the main job ---------------------------------------------------------------------------------------------


def quickstart_check(size: dict[str, Any], work: Path, out_dir: Path, timeout_s: float) -> dict[str, Any]:
    """``syngrpo train`` on this device, as a newcomer runs it; its summary and metrics are copied beside the figures."""
    import shutil
    import subprocess
    from importlib.metadata import entry_points

    from syngrpo.plugins import ENTRY_POINT_GROUP

    if not list(entry_points(group=ENTRY_POINT_GROUP)):
        return {"status": "not available", "why": "syngrpo is not installed here (its plugins come from entry points)"}
    run_dir = work / "quickstart"
    sets = [f"model.device={size['device']}", "logging.progress=false"]
    if not size["real"]:  # every phase shrunk: the smoke run checks the wiring, not the learning
        sets += ["optim.max_steps=2", "sft.plain_steps=2", "sft.steps=2", "sft.n_images=8", "data.toy.n_eval=4",
                 "sft.vision_pretrain.steps=2", "sft.vision_pretrain.n_images=8", "logging.save_every=0"]
    cmd = [sys.executable, "-c", "import sys; from syngrpo.cli import main; sys.exit(main(sys.argv[1:]))",
           "train", "--out", str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=work)
        log, timed_out = proc.stdout + proc.stderr, False
    except subprocess.TimeoutExpired as exc:  # keep what it wrote: a run stopped at its limit is still evidence
        log = "".join(b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (exc.stdout, exc.stderr))
        proc, timed_out = None, True
    seconds = round(time.perf_counter() - t0, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quickstart.log").write_text(log, encoding="utf-8")
    for name in ("summary.md", "metrics.jsonl"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, out_dir / f"quickstart-{name}")
    if proc is None or timed_out:
        return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s: {log[-1000:]}", "seconds": seconds}
    if proc.returncode != 0:
        return {"status": "failed", "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}",
                "seconds": seconds}
    summary = run_dir / "summary.md"
    verdict = summary.read_text(encoding="utf-8").strip().splitlines()[-1] if summary.exists() else ""
    return {"status": "ok", "seconds": seconds, "verdict": verdict}


# ---- the run ------------------------------------------------------------------------------------------------------


#: seconds each part needs at least (real sizes); a part is skipped when less of the budget is left
NEEDS = {"policy_hf": 120, "policy_fsdp": 90, "sdxl": 60, "sam": 20, "quickstart": 180}


def run(parts: list[str], *, smoke: bool, budget_s: float, out_path: Path) -> dict[str, Any]:
    import torch
    import transformers

    start = time.perf_counter()
    size = sizes(smoke)
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here (use --cpu-smoke for the CPU run)")
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if not smoke else f"cpu ({platform.processor() or platform.machine()})",
        "mode": "cpu-smoke" if smoke else "gpu", "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "sizes": size, "parts": {},
    }
    try:
        import diffusers

        figures["diffusers"] = diffusers.__version__
    except ImportError:
        figures["diffusers"] = None
    with tempfile.TemporaryDirectory(prefix="syngrpo-gpu-check-") as tmp:
        work = Path(tmp)
        policy_dir: Path | None = None
        for part in parts:
            left = budget_s - (time.perf_counter() - start)
            if not smoke and left < NEEDS[part]:
                figures["parts"][part] = {"status": "skipped", "why": f"{left:.0f} s of the time budget left"}
                continue
            t0 = time.perf_counter()
            print(f"gpu-check: {part} ...", file=sys.stderr, flush=True)
            try:
                if part in ("policy_hf", "policy_fsdp"):
                    if policy_dir is None:
                        policy_dir = build_policy(work / "policy", size)
                    result = policy_step(policy_dir, work, size, fsdp=part == "policy_fsdp")
                elif part == "sdxl":
                    result = sdxl_check(size)
                elif part == "quickstart":
                    left = budget_s - (time.perf_counter() - start)
                    result = quickstart_check(size, work, out_path.parent, timeout_s=600.0 if smoke else left)
                else:
                    result = sam_check(size, work)
            except Exception as exc:  # one part's failure must not lose the others' figures
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "trace": traceback.format_exc()[-2000:]}
            result["wall_seconds"] = round(time.perf_counter() - t0, 1)
            figures["parts"][part] = result
            print(f"gpu-check: {part} {result['status']} in {result['wall_seconds']} s", file=sys.stderr, flush=True)
            gc.collect()  # the part's models go before the next part measures its peak
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            _write(figures, start, out_path)  # a run killed at its time limit keeps the parts done so far
    _write(figures, start, out_path)
    return figures


def _write(figures: dict[str, Any], start: float, out_path: Path) -> None:
    figures["total_seconds"] = round(time.perf_counter() - start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(figures, indent=1), encoding="utf-8")


def markdown(figures: dict[str, Any]) -> str:
    """The table for docs/performance.md."""
    head = (f"gpu-check on **{figures['device']}** ({figures['mode']}; torch {figures['torch']}, transformers "
            f"{figures['transformers']}, diffusers {figures['diffusers']}), {figures['total_seconds']} s in all\n\n")
    lines = ["| check | status | figures |", "|---|---|---|"]
    keys = {
        "policy_hf": ("peak_gib", "plan_peak_gib", "peak_over_plan", "rollout_over_plan", "update_over_plan",
                      "sampled_tokens_per_s", "rollout_seconds", "update_seconds", "step_seconds", "rows"),
        "policy_fsdp": ("peak_gib", "plan_peak_gib", "peak_over_plan", "rollout_over_plan", "update_over_plan",
                        "sampled_tokens_per_s", "rollout_seconds", "update_seconds", "step_seconds", "rows"),
        "sdxl": ("px", "steps", "seconds_per_image", "peak_gib", "params"),
        "sam": ("seconds_per_image", "boxes", "params"),
        "quickstart": ("seconds", "verdict"),
    }
    for part, result in figures["parts"].items():
        if result["status"] == "ok":
            text = ", ".join(f"{k} {result[k]}" for k in keys[part] if k in result)
        else:
            text = result.get("why") or result.get("error", "")
        lines.append(f"| {part} | {result['status']} | {text.replace('|', '/')} |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="the same steps at tiny sizes on the CPU")
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu-check" / "figures.json"), help="figures JSON")
    ap.add_argument("--budget", type=float, default=420.0, help="total seconds (default 420)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _importable_from_checkout()
    import logging

    from transformers.utils import logging as hf_logging

    logging.basicConfig(level=logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    figures = run(parts, smoke=args.cpu_smoke, budget_s=args.budget, out_path=Path(args.out))
    print(markdown(figures))
    print(f"\nfigures: {args.out}")
    failed = [p for p, r in figures["parts"].items() if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
