"""What the ``vllm`` engine holds on each GPU, for ``syngrpo plan``: its reservation, and whether its KV cache fits.

The engine's registered factory carries :func:`plan_vllm_memory` as ``plan_memory`` (the
rollout-engine hook's memory declaration, :class:`syngrpo.scale.plan.EngineMemory`): the plan counts
``gpu_memory_utilization`` x GPU memory, held all the time or, with ``enable_sleep_mode``, only while
sampling; inside it vLLM keeps its bf16 weights and a KV cache that must hold at least one sequence of
``max_model_len`` tokens, or vLLM refuses to start (:func:`vllm_kv_cache`), and a run whose
reservation cannot hold one does not fit.  The engine (:mod:`syngrpo_vllm.engine`) sizes
``max_model_len`` with the same :func:`vllm_max_model_len`.  Arithmetic only: no vLLM, no torch.
"""

from __future__ import annotations

import math
from typing import Any

from syngrpo.models.architecture import Architecture
from syngrpo.scale.plan import EngineKnob, EngineMemory, GiB, MemoryPart, PlanInputs, image_tokens

#: vLLM's share of the GPU when ``gpu_memory_utilization`` is not given (the trainer shares the GPU)
DEFAULT_UTILIZATION = 0.3
#: the share ``syngrpo plan`` suggests when a run does not fit
LOWER_UTILIZATION = 0.2


def vllm_max_model_len(image_tokens: int, prompt_text_tokens: int, max_new_tokens: int) -> int:
    """The vllm engine's ``max_model_len`` when none is given: the longest sequence the run can make.

    Image tokens at the pixel budget (:func:`syngrpo.scale.plan.tokens_for_pixels`) + the prompt's text
    allowance (``prompt_text_tokens``; the engine refuses a longer prompt, naming the option) + the longest
    completion (rollout or eval ``max_new_tokens``). Without it vLLM sizes for the model's whole
    context (128k tokens for Qwen2.5-VL).
    """
    return int(image_tokens) + int(prompt_text_tokens) + int(max_new_tokens)


def _options(inp: PlanInputs) -> tuple[float, bool, int | None, int]:
    """(gpu_memory_utilization, enable_sleep_mode, max_model_len or None, prompt_text_tokens) of the engine options."""
    opts: dict[str, Any] = dict(inp.engine_options)
    text = opts.get("prompt_text_tokens")
    max_len = opts.get("max_model_len")
    return (float(opts.get("gpu_memory_utilization", DEFAULT_UTILIZATION)), bool(opts.get("enable_sleep_mode", False)),
            int(max_len) if max_len is not None else None,
            int(text) if text is not None else inp.prompt_tokens)


def vllm_kv_cache(arch: Architecture, inp: PlanInputs) -> tuple[str, str | None]:
    """What the vLLM reservation must hold, and the reason it cannot (``None`` when it can).

    vLLM keeps the policy in bf16 (2 B/param, every rank a whole copy: ``tensor_parallel_size`` 1) and
    gives the rest of its ``gpu_memory_utilization`` share to the KV cache (2 B x 2 (keys, values) x layers
    x kv width per token); at start-up it refuses a cache that cannot hold one sequence of
    ``max_model_len`` tokens. Not counted: vLLM's own activation peak of its profile run and CUDA graphs,
    so keep some slack beyond this.
    """
    utilization, _, max_len, text = _options(inp)
    max_new = max(inp.max_new_tokens, inp.eval_max_new_tokens)
    limit = dict(dict(inp.engine_options).get("limit_mm_per_prompt") or {}).get("image", 1)
    images = max(int(limit), inp.images_per_sample)  # the engine budgets its image limit, raised to the data's
    img = image_tokens(arch, inp.max_pixels) * images
    seq = max_len or vllm_max_model_len(img, text, max_new)
    per_token = 2 * 2 * arch.layers * arch.kv_dim
    weights = 2 * arch.params
    reserve = utilization * inp.gpu_memory_gib * GiB
    room = reserve - weights
    sequences = room / (seq * per_token) if room > 0 else 0.0
    world = inp.gpus if inp.resolved_strategy in ("ddp", "fsdp") else 1
    prompts = math.ceil(inp.batch_size / world)
    rollout_tokens = prompts * (img + text) + prompts * inp.num_generations * max_new  # prompts shared per group
    how = (f"bf16 weights {weights / GiB:.2f} GiB + KV cache {per_token * seq / GiB:.3f} GiB per sequence of "
           f"max_model_len {seq:,} ({'set' if max_len else f'{img:,} image + {text} text + {max_new} new'}"
           f" tokens): room for {sequences:.1f} such sequences; a whole rollout of the rank "
           f"({prompts} prompts x G {inp.num_generations}) needs {rollout_tokens * per_token / GiB:.2f} GiB")
    problem = None
    if sequences < 1:
        need = (weights + seq * per_token) / (inp.gpu_memory_gib * GiB)
        problem = (f"vLLM cannot start: gpu_memory_utilization {utilization} x {inp.gpu_memory_gib:g} GiB "
                   f"holds the bf16 weights ({weights / GiB:.2f} GiB) but not the KV cache of one "
                   f"{seq:,}-token sequence ({per_token * seq / GiB:.2f} GiB); raise "
                   f"rollout.engine_options.gpu_memory_utilization above {need:.2f} or lower max_model_len")
    return how, problem


def plan_vllm_memory(arch: Architecture, inp: PlanInputs) -> EngineMemory:
    """The ``vllm`` engine's memory declaration: its reservation (asleep during the update with sleep mode), the
    reason its KV cache cannot start, and the two options worth turning (sleep mode, a smaller share)."""
    utilization, sleep, _, _ = _options(inp)
    inside, problem = vllm_kv_cache(arch, inp)
    reservation = MemoryPart("vLLM reservation", int(utilization * inp.gpu_memory_gib * GiB),
                             "rollout" if sleep else "both",
                             f"gpu_memory_utilization {utilization} x {inp.gpu_memory_gib:g} GiB"
                             + (" (asleep during the update)" if sleep else "") + f"; holds {inside}")
    knobs = []
    if not sleep:
        knobs.append(EngineKnob("--set rollout.engine_options.enable_sleep_mode=true", {"enable_sleep_mode": True}))
    if utilization > LOWER_UTILIZATION:
        knobs.append(EngineKnob(f"--set rollout.engine_options.gpu_memory_utilization={LOWER_UTILIZATION}",
                                {"gpu_memory_utilization": LOWER_UTILIZATION}))
    return EngineMemory(parts=[reservation], problems=[problem] if problem else [], knobs=knobs)
