"""What to turn when a run does not fit (``syngrpo plan``'s advice): the knobs, and the smallest settings that fit.

Every answer is a :func:`syngrpo.scale.plan.plan_memory` of the changed inputs: the knobs of the
config (strategy, image budget, checkpointing, frozen vision, LoRA, micro-batches, no KL term), the
options the rollout engine's plugin names as worth turning (:class:`~syngrpo.scale.plan.EngineKnob`,
e.g. vLLM's sleep mode and memory share), and more GPUs.  A setting the trainer refuses (``fsdp`` with
LoRA or float16) is never advice.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

from syngrpo.models.architecture import Architecture
from syngrpo.scale.plan import MemoryPlan, PlanInputs, engine_memory, gpu_counts, image_tokens, plan_memory

#: image tokens the shipped paper configs allow (``max_pixels: 1003520`` for Qwen2.5-VL: COCO images pass unresized)
PAPER_IMAGE_TOKENS = 1280

#: how far each knob's field reaches: 0 how the memory is laid out (what is learned stays the same), 1 what the
#: model sees (the image budget), 2 what is trained (frozen vision, adapters, no KL term); a field not named
#: here (a new knob) counts as 1; an engine option's knob says its own tier (``EngineKnob.tier``)
KNOB_TIERS = {"strategy": 0, "gradient_checkpointing": 0, "grad_accum": 0, "max_pixels": 1, "freeze_vision": 2,
              "lora": 2, "beta": 2}


@dataclass(frozen=True)
class Knob:
    """One setting worth turning: what to pass, the inputs with it, and how far it reaches (:data:`KNOB_TIERS`)."""

    label: str
    inputs: PlanInputs
    tier: int


def _field_tier(inp: PlanInputs, changed: PlanInputs) -> int:
    return max((KNOB_TIERS.get(f, 1) for f in PlanInputs.__dataclass_fields__
                if f != "gpus" and getattr(changed, f) != getattr(inp, f)), default=0)


def knobs(inp: PlanInputs, arch: Architecture) -> list[Knob]:
    """The settings worth turning when a run does not fit, each as the changed inputs (the image budget's
    step needs the architecture's patch size; the engine's knobs come from its plugin, :func:`engine_memory`)."""
    out: list[tuple[str, PlanInputs]] = []
    if inp.resolved_strategy != "fsdp":
        out.append(("--set parallel.strategy=fsdp", replace(inp, strategy="fsdp")))
    more = next((n for n in gpu_counts(inp.batch_size) if n > inp.gpus), None)
    if more is not None:
        out.append((f"more GPUs (--gpus {more}, fsdp)", replace(inp, strategy="fsdp", gpus=more)))
    unit = (arch.patch_size * arch.merge_size) ** 2  # pixels per merged image token
    tokens = image_tokens(arch, inp.max_pixels)
    cap = PAPER_IMAGE_TOKENS if tokens > PAPER_IMAGE_TOKENS else tokens // 2
    if cap >= 256:
        out.append((f"--set model.max_pixels={cap * unit} ({cap:,} image tokens at most)",
                    replace(inp, max_pixels=cap * unit)))
    if not inp.gradient_checkpointing:
        out.append(("--set model.gradient_checkpointing=true", replace(inp, gradient_checkpointing=True)))
    if not inp.freeze_vision and not inp.lora:
        out.append(("--set model.freeze_vision=true", replace(inp, freeze_vision=True)))
    if not inp.lora:  # under fsdp too: the adapters are sharded with the frozen base
        out.append(("--set model.lora.enabled=true", replace(inp, lora=True)))
    per_rank = math.ceil(inp.batch_size / (inp.gpus if inp.resolved_strategy != "single" else 1))
    if inp.grad_accum < per_rank:
        out.append((f"--set optim.grad_accum={per_rank} (one prompt per micro-batch)",
                    replace(inp, grad_accum=per_rank)))
    found = [Knob(label, changed, _field_tier(inp, changed)) for label, changed in out]
    declared = engine_memory(arch, inp)
    for k in declared.knobs if declared is not None else ():
        found.append(Knob(k.label, replace(inp, engine_options={**inp.engine_options, **k.options}), k.tier))
    if inp.beta > 0:
        found.append(Knob("--set algorithm.beta=0 (no reference model)", replace(inp, beta=0.0),
                          KNOB_TIERS["beta"]))
    return [k for k in found if runnable(k.inputs)]


def runnable(inp: PlanInputs) -> bool:
    """Whether the trainer accepts this setting: ``fsdp`` trains (full or LoRA) in float32 or bfloat16 only,
    so a knob or a GPU count that needs it in float16 is no advice."""
    return not (inp.resolved_strategy == "fsdp" and inp.dtype == "float16")


def advice(arch: Architecture, inp: PlanInputs) -> list[tuple[str, float, bool]]:
    """(knob, peak GiB with it, fits) for every knob of :func:`knobs`, best first."""
    rows = []
    for knob in knobs(inp, arch):
        p = plan_memory(arch, knob.inputs)
        rows.append((knob.label, p.peak_gib, p.fits))
    return sorted(rows, key=lambda r: r[1])


@dataclass
class Fix:
    """A setting that makes a run fit: what to pass (``--gpus`` / ``--set``), and the plan with it."""

    setting: str
    plan: MemoryPlan


def smallest_gpu_count(arch: Architecture, inp: PlanInputs) -> Fix | None:
    """The fewest GPUs of this memory, more than ``inp.gpus`` and a divisor of the batch, on which the run fits:
    as configured, or else with ``fsdp`` (replicated states do not shrink with more GPUs)."""
    for n in (n for n in gpu_counts(inp.batch_size) if n > inp.gpus):
        as_is = plan_memory(arch, replace(inp, gpus=n))
        if as_is.fits:
            return Fix(f"--gpus {n}", as_is)
        if as_is.strategy != "fsdp" and runnable(replace(inp, strategy="fsdp")):
            sharded = plan_memory(arch, replace(inp, gpus=n, strategy="fsdp"))
            if sharded.fits:
                return Fix(f"--gpus {n} --set parallel.strategy=fsdp", sharded)
    return None


def _delta(inp: PlanInputs, changed: PlanInputs) -> dict[str, Any]:
    """What ``changed`` sets differently from ``inp``, an engine option as ``engine_options.<name>``."""
    delta = {f: getattr(changed, f) for f in PlanInputs.__dataclass_fields__
             if f not in ("gpus", "engine_options") and getattr(changed, f) != getattr(inp, f)}
    for name, value in changed.engine_options.items():
        if name not in inp.engine_options or inp.engine_options[name] != value:
            delta[f"engine_options.{name}"] = value
    return delta


def _apply(inp: PlanInputs, delta: dict[str, Any]) -> PlanInputs:
    """``inp`` with a merged :func:`_delta` applied."""
    options = {k.removeprefix("engine_options."): v for k, v in delta.items() if k.startswith("engine_options.")}
    fields = {k: v for k, v in delta.items() if not k.startswith("engine_options.")}
    return replace(inp, **fields, engine_options={**inp.engine_options, **options})


def smallest_knob_set(arch: Architecture, inp: PlanInputs, *, most: int = 3) -> Fix | None:
    """The smallest set of knobs of :func:`knobs` (at most ``most``, on these GPUs) that together make the run
    fit. Smallest means least intrusive first (:data:`KNOB_TIERS`: a set whose farthest-reaching knob only
    lays memory out differently beats one that lowers the image budget, which beats one that changes what is
    trained, however few knobs that one needs), then the fewest knobs, then the lowest peak."""
    options = [(k.tier, k.label.split(" (")[0], _delta(inp, k.inputs)) for k in knobs(inp, arch)
               if k.inputs.gpus == inp.gpus]  # GPU counts: smallest_gpu_count
    best: tuple[Any, ...] | None = None
    for size in range(1, most + 1):
        for combo in itertools.combinations(options, size):
            merged: dict[str, Any] = {}
            for _, _, delta in combo:
                if any(k in merged and merged[k] != v for k, v in delta.items()):
                    break  # two knobs that set one field differently
                merged.update(delta)
            else:
                changed = _apply(inp, merged)
                if not runnable(changed):
                    continue
                plan = plan_memory(arch, changed)
                key = (max(t for t, _, _ in combo), size, plan.peak_bytes)
                if plan.fits and (best is None or key < best[0]):
                    best = (key, " ".join(label for _, label, _ in sorted(combo, key=lambda c: c[0])), plan)
    return None if best is None else Fix(best[1], best[2])
