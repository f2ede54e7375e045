"""Per-GPU memory of a training run, part by part, before anything is loaded (``syngrpo plan``).

The estimate follows how the trainer holds the policy (docs/training.md, "Memory and scale"):

* ``model.dtype: bfloat16`` (or float16) means mixed precision: the policy's parameters live in
  float32 (**master weights**, 4 B/param, frozen ones too) and forward/backward compute in bf16.
  Under ``float32`` the master *is* the compute copy and there is no bf16 copy.
* **bf16 compute copy**: under ``ddp`` (or one process) every parameter's bf16 cast lives while the
  forward/backward runs (2 B/param). Under ``fsdp`` only the units FSDP2 has gathered are
  unsharded at once: the root (embeddings, LM head, merger) plus the current and the prefetched
  layer, and the unsharded gradient of the layer being reduced (bf16, then float32 for the
  reduce-scatter). The ``hf`` engine's ``generate`` needs the whole model unsharded, so while it
  samples, a full bf16 copy is gathered (2 B/param).
* **gradients** (float32, 4 B) and **AdamW states** (two float32 moments, 8 B) for the trainable
  parameters only: ``freeze_vision`` drops the vision tower's, LoRA leaves only the adapters'.
  ``DistributedDataParallel`` also keeps gradient buckets the size of the gradients (4 B).
* **reference model** for the KL term (``algorithm.beta > 0``): bf16, 2 B/param.
* **what the rollout engine holds**: an engine whose plugin declares its memory (a ``plan_memory``
  attribute on its registered factory, :class:`EngineMemory`; the ``vllm`` engine's reservation and KV
  cache, ``syngrpo_vllm.memory``) is counted as it says, with the problems that stop it starting and
  the engine options worth turning; any other engine samples from the policy's own weights, counted
  as the ``hf`` engine's ``generate`` (the copy it samples from, and its KV cache, below).
* **activations** of one micro-batch (see :func:`activation_bytes`) and **logits**
  (rows x (completion tokens + 1) x vocabulary x 4 B: the bf16 logits and their gradient).
* **KV cache of hf generate** (an engine that declares nothing): rows x sequence x layers x 2 (keys,
  values) x kv width x 2 B.
* a fixed **CUDA context** allowance (:data:`CONTEXT_GIB`).

Under ``fsdp`` every sharded part is divided over the world exactly as FSDP2 does it: each
parameter tensor's dim 0 is split in ceil(dim0 / N) rows per rank. A step has two phases
that never overlap, sampling (rollout) and the update; the peak is the larger of the two sums.
What to turn when a run does not fit is :mod:`syngrpo.scale.advice`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from syngrpo.config import SHIPPED_POLICIES
from syngrpo.models.architecture import Architecture, load_architecture
from syngrpo.plugins import get_registry
from syngrpo.scale.dtype import compute_dtype

GiB = 1024**3
#: CUDA context, cuBLAS / NCCL workspaces and allocator slack, per GPU
CONTEXT_GIB = 1.0
#: text tokens of a prompt besides the image (system turn, question, response-format instructions)
DEFAULT_PROMPT_TOKENS = 256

Phase = Literal["both", "rollout", "update"]
Strategy = Literal["single", "ddp", "fsdp"]


@dataclass(frozen=True)
class PlanInputs:
    """The config values the estimate depends on (one flat record, so knobs can be varied with ``replace``)."""

    dtype: str = "bfloat16"
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    beta: float = 0.04
    engine: str = "hf"
    #: ``rollout.engine_options``: read by the engine's own memory declaration (:class:`EngineMemory`)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 20
    grad_accum: int = 1
    num_generations: int = 6
    max_new_tokens: int = 256
    max_pixels: int | None = None
    shared_prefix: str = "auto"
    strategy: str = "auto"
    gpus: int = 1
    gpu_memory_gib: float = 80.0
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    #: ``eval.max_new_tokens`` (0: the rollout's): an engine that sizes its sequences covers the longer of the two
    eval_max_new_tokens: int = 0
    #: images one prompt shows (several-image samples: ``Sample.images``); the image tokens are summed over them
    images_per_sample: int = 1

    @classmethod
    def from_config(cls, cfg: Any, *, gpus: int, gpu_memory_gib: float,
                    prompt_tokens: int = DEFAULT_PROMPT_TOKENS, images_per_sample: int | None = None) -> PlanInputs:
        """Read a :class:`~syngrpo.config.TrainConfig`.  ``images_per_sample`` defaults to the toy data's
        ``images_per_sample`` option when the run draws toy data, else 1 (a dataset's count is read by
        ``syngrpo check``, not here: give it with ``syngrpo plan --images``)."""
        if images_per_sample is None:
            data = getattr(cfg, "data", None)
            toy = getattr(getattr(data, "toy", None), "options", None) or {}
            images_per_sample = int(toy.get("images_per_sample", 1)) if data is not None and not data.train else 1
        parallel = getattr(cfg, "parallel", None)
        return cls(
            dtype=compute_dtype(cfg.model.dtype, "cuda"),  # the plan is for a GPU that has bf16
            gradient_checkpointing=cfg.model.gradient_checkpointing, freeze_vision=cfg.model.freeze_vision,
            lora=cfg.model.lora.enabled, lora_r=cfg.model.lora.r, lora_targets=tuple(cfg.model.lora.target_modules),
            beta=cfg.algorithm.beta, engine=cfg.rollout.engine, engine_options=dict(cfg.rollout.engine_options),
            batch_size=cfg.optim.batch_size, grad_accum=cfg.optim.grad_accum,
            num_generations=cfg.rollout.num_generations, max_new_tokens=cfg.rollout.max_new_tokens,
            max_pixels=cfg.model.max_pixels, shared_prefix=cfg.algorithm.shared_prefix,
            strategy=getattr(parallel, "strategy", "auto"), gpus=gpus, gpu_memory_gib=gpu_memory_gib,
            prompt_tokens=prompt_tokens,
            eval_max_new_tokens=int(getattr(getattr(cfg, "eval", None), "max_new_tokens", None) or 0),
            images_per_sample=max(1, int(images_per_sample)),
        )

    @property
    def resolved_strategy(self) -> Strategy:
        """``auto`` = ``ddp`` when more than one GPU runs, else a single process."""
        if self.strategy == "auto":
            return "ddp" if self.gpus > 1 else "single"
        if self.strategy == "ddp" and self.gpus == 1:
            return "single"
        return self.strategy  # type: ignore[return-value]


@dataclass
class MemoryPart:
    """One line of the plan: bytes per GPU, the phase it is held in, and how it was counted."""

    name: str
    bytes: int
    phase: Phase
    how: str

    @property
    def gib(self) -> float:
        return self.bytes / GiB


@dataclass
class MemoryPlan:
    """The per-GPU memory of one run under one strategy."""

    model: str
    source: str
    strategy: Strategy
    gpus: int
    gpu_memory_gib: float
    params: int
    trainable_params: int
    #: rows (prompts x G) of one micro-batch on one GPU, and the tokens of one row
    micro_batch_rows: int
    sequence_tokens: int
    image_tokens: int
    parts: list[MemoryPart] = field(default_factory=list)
    #: reasons the run cannot start whatever the peak (e.g. vLLM's KV cache cannot hold one sequence)
    problems: list[str] = field(default_factory=list)

    def phase_bytes(self, phase: str) -> int:
        return sum(p.bytes for p in self.parts if p.phase in ("both", phase))

    @property
    def peak_bytes(self) -> int:
        return max(self.phase_bytes("rollout"), self.phase_bytes("update"))

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GiB

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.gpu_memory_gib * GiB and not self.problems

    def part(self, name: str) -> MemoryPart | None:
        return next((p for p in self.parts if p.name == name), None)

    @property
    def state_bytes(self) -> int:
        """Parameters (master / fp32 weights) + gradients + AdamW states: what a rank holds between steps."""
        names = ("master weights (fp32)", "weights (fp32)", "gradients (fp32)", "AdamW states (fp32)")
        return sum(p.bytes for p in self.parts if p.name in names)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(peak_bytes=self.peak_bytes, peak_gib=round(self.peak_gib, 3), fits=self.fits,
                   rollout_bytes=self.phase_bytes("rollout"), update_bytes=self.phase_bytes("update"))
        return out


@dataclass(frozen=True)
class EngineKnob:
    """An engine option worth turning when a run does not fit (:func:`syngrpo.scale.advice.knobs`)."""

    #: what to pass, e.g. ``--set rollout.engine_options.enable_sleep_mode=true``
    label: str
    #: the ``rollout.engine_options`` it sets
    options: Mapping[str, Any]
    #: how far it reaches (:data:`syngrpo.scale.advice.KNOB_TIERS`): 0 lays memory out differently, 1 changes
    #: what the model sees, 2 what is trained
    tier: int = 0


@dataclass
class EngineMemory:
    """What a rollout engine holds on each GPU, as its plugin declares it.

    A rollout-engine plugin declares its memory by giving its registered factory a ``plan_memory``
    attribute: ``plan_memory(arch, inp) -> EngineMemory`` (``arch``: the policy's
    :class:`~syngrpo.models.architecture.Architecture`; ``inp``: these :class:`PlanInputs`, its options in
    ``inp.engine_options``).  :func:`plan_memory` adds ``parts`` to the plan, ``problems`` (reasons the
    engine cannot start whatever the peak) to its problems, and ``syngrpo plan``'s advice tries ``knobs``.
    An engine that declares nothing samples from the policy's own weights (counted as ``hf`` generate).
    """

    parts: list[MemoryPart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    knobs: list[EngineKnob] = field(default_factory=list)


def engine_memory(arch: Architecture, inp: PlanInputs) -> EngineMemory | None:
    """The memory ``inp.engine``'s plugin declares (its factory's ``plan_memory``), or None when it declares none
    (or is not installed here: a plan is arithmetic, and the policy-sampling default still applies)."""
    entry = get_registry().entries.get("rollout_engines", {}).get(inp.engine)
    declared: Callable[[Architecture, PlanInputs], EngineMemory] | None = (
        getattr(entry.factory, "plan_memory", None) if entry is not None else None)
    return None if declared is None else declared(arch, inp)


def _sum_numel(arch: Architecture, *, world: int, sharded: bool, which: str = "all") -> int:
    out = 0
    for t in arch.tensors:
        if which == "text" and t.vision:
            continue
        out += t.shard_numel(world) if sharded else t.numel
    return out


def tokens_for_pixels(pixels: int, patch_size: int, merge_size: int) -> int:
    """Merged image tokens of an image of at most ``pixels`` pixels: pixels / (patch x merge)^2, rounded down.

    An upper bound: the processor resizes to multiples of patch x merge whose product stays within
    ``pixels`` (``smart_resize``), so it never makes more tokens than this.
    """
    return max(1, int(pixels) // (patch_size * merge_size) ** 2)


def image_tokens(arch: Architecture, max_pixels: int | None) -> int:
    """Merged image tokens of the largest image the processor lets through: max_pixels / (patch x merge)^2."""
    return tokens_for_pixels(max_pixels or arch.default_max_pixels, arch.patch_size, arch.merge_size)


def prompt_image_tokens(arch: Architecture, inp: PlanInputs) -> int:
    """Image tokens of one prompt: the largest image's (:func:`image_tokens`) times the images it shows."""
    return image_tokens(arch, inp.max_pixels) * inp.images_per_sample


def micro_batch_rows(inp: PlanInputs, world: int) -> tuple[int, int]:
    """(prompts, rows) of the largest micro-batch on one GPU: the rank's ceil(batch / world) prompts split in
    ``grad_accum`` near-equal chunks, each prompt rolled out G times."""
    per_rank = math.ceil(inp.batch_size / world)
    prompts = math.ceil(per_rank / min(inp.grad_accum, per_rank))
    return prompts, prompts * inp.num_generations


def shared_prefix_on(inp: PlanInputs) -> bool:
    """As the trainer decides it: ``auto`` = on unless gradient checkpointing is on."""
    return inp.shared_prefix == "true" or (inp.shared_prefix == "auto" and not inp.gradient_checkpointing)


def activation_bytes(arch: Architecture, inp: PlanInputs, *, prompts: int, rows: int) -> tuple[int, str]:
    """Activations autograd keeps for one micro-batch's backward, in bf16 (2 B per element).

    Per token and decoder layer the saved tensors are the two norm inputs and outputs, q, the
    attention output and the o_proj input (6 H), k and v (2 x kv width), and gate, up,
    act(gate) and act(gate) * up (4 x intermediate): ``a = 2 B x (6 H + 2 kv + 4 I)``; a vision block
    keeps ``2 B x (8 Hv + 4 Iv)`` per patch (q/k/v are one 3 Hv tensor). Attention itself keeps
    no T x T matrix (SDPA / flash). Gradient checkpointing keeps only each layer's input
    (``2 B x H`` per token and layer) plus one layer's full set while it is recomputed. Tokens:
    with shared-prefix scoring the prompt (image + text) is computed once per prompt and the
    completion once per row; otherwise every row holds the whole sequence. The vision tower
    keeps activations only when it trains (not ``freeze_vision``, not LoRA); it runs once per
    prompt with shared-prefix scoring, else once per row, on merge^2 patches per image token.
    """
    img = prompt_image_tokens(arch, inp)  # summed over the prompt's images
    prompt_len = img + inp.prompt_tokens
    if shared_prefix_on(inp):
        tokens = prompts * prompt_len + rows * (inp.max_new_tokens + 1)
        vision_images = prompts
    else:
        tokens = rows * (prompt_len + inp.max_new_tokens)
        vision_images = rows
    per_tok_layer = 2 * (6 * arch.hidden + 2 * arch.kv_dim + 4 * arch.intermediate)
    if inp.gradient_checkpointing:
        text = tokens * arch.layers * 2 * arch.hidden + tokens * per_tok_layer
    else:
        text = tokens * arch.layers * per_tok_layer
    vision = 0
    if not inp.freeze_vision and not inp.lora and arch.vision_layers:
        patches = vision_images * img * arch.merge_size**2
        per_patch_block = 2 * (8 * arch.vision_hidden + 4 * arch.vision_intermediate)
        if inp.gradient_checkpointing:
            vision = patches * arch.vision_layers * 2 * arch.vision_hidden + patches * per_patch_block
        else:
            vision = patches * arch.vision_layers * per_patch_block
    how = (f"{tokens:,} text tokens x {arch.layers} layers"
           + (" (checkpointed)" if inp.gradient_checkpointing else "")
           + (f" + {vision_images * inp.images_per_sample} image(s) x "
              f"{img // inp.images_per_sample * arch.merge_size ** 2:,} patches x {arch.vision_layers} "
              "vision blocks" if vision else ""))
    return text + vision, how


def plan_memory(arch: Architecture, inp: PlanInputs, *, strategy: Strategy | None = None) -> MemoryPlan:
    """The per-GPU memory of the run ``inp`` describes, under ``strategy`` (default: the configured one)."""
    strategy = strategy or inp.resolved_strategy
    world = inp.gpus if strategy in ("ddp", "fsdp") else 1
    sharded = strategy == "fsdp"
    P = arch.params
    mixed = inp.dtype in ("bfloat16", "float16")
    half = "fp16" if inp.dtype == "float16" else "bf16"

    # which parameters train
    if inp.lora:
        trainable_full = arch.lora_params(inp.lora_r, list(inp.lora_targets))
        # FSDP2 shards the adapters like any parameter: ceil(r / N) rows of each A, ceil(out / N) rows of each B
        trainable = trainable_full if not sharded else sum(
            math.ceil(inp.lora_r / world) * i + math.ceil(o / world) * inp.lora_r
            for name, (i, o) in arch.linears.items() if name.rsplit(".", 1)[-1] in inp.lora_targets)
        train_what = f"LoRA r={inp.lora_r} adapters"
    else:
        train_tensors = [t for t in arch.tensors if not (inp.freeze_vision and t.vision)]
        trainable_full = sum(t.numel for t in train_tensors)
        trainable = sum(t.shard_numel(world) if sharded else t.numel for t in train_tensors)
        train_what = "text + vision" if not inp.freeze_vision else "text (vision frozen)"
    stored = _sum_numel(arch, world=world, sharded=sharded)
    shard_note = f", sharded over {world} (ceil(dim0 / {world}) rows per tensor)" if sharded else ""

    parts: list[MemoryPart] = []
    if inp.lora:  # the frozen base is loaded in the compute dtype, the adapters are the float32 masters
        base_bytes = 2 if mixed else 4
        parts.append(MemoryPart(f"frozen base ({half if mixed else 'fp32'})", base_bytes * stored, "both",
                                f"{base_bytes} B x {P:,} params{shard_note}"))
        parts.append(MemoryPart("LoRA adapters (fp32)", 4 * trainable, "both",
                                f"4 B x {trainable_full:,} ({train_what}){shard_note}"))
    elif mixed:
        parts.append(MemoryPart("master weights (fp32)", 4 * stored, "both", f"4 B x {P:,} params{shard_note}"))
    else:
        parts.append(MemoryPart("weights (fp32)", 4 * stored, "both", f"4 B x {P:,} params{shard_note}"))

    if mixed and not (inp.lora and not sharded):  # a LoRA base in bf16 is its own compute copy
        if sharded and world == 1:
            # FSDP2 on one rank skips the all-gather and keeps each unit's bf16 copy built from the shard: on an
            # H100 the update phase held a whole copy (measured 77.18 GiB against 71.86 planned per unit)
            parts.append(MemoryPart(f"{half} compute copy", 2 * P, "update",
                                    f"2 B x {P:,} params (FSDP2 on one rank keeps its unsharded copies)"))
        elif sharded:
            units = arch.units()
            root = units.pop("", 0)
            largest = max(units.values(), default=0)
            transient = 2 * (root + 2 * largest) + 6 * largest
            parts.append(MemoryPart(f"{half} compute copy", transient, "update",
                                    f"2 B x (root {root:,} + 2 x largest unit {largest:,}) "
                                    f"+ 6 B x {largest:,} (unsharded unit gradient)"))
        else:
            parts.append(MemoryPart(f"{half} compute copy", 2 * P, "update", f"2 B x {P:,} params"))

    parts.append(MemoryPart("gradients (fp32)", 4 * trainable, "both",
                            f"4 B x {trainable_full:,} trainable ({train_what}){shard_note if sharded else ''}"))
    if strategy == "ddp":
        parts.append(MemoryPart("DDP gradient buckets", 4 * trainable_full, "both",
                                "DistributedDataParallel's flat buckets, the size of the gradients"))
    parts.append(MemoryPart("AdamW states (fp32)", 8 * trainable, "both",
                            f"2 moments x 4 B x {trainable_full:,} trainable{shard_note if sharded else ''}"))
    if inp.beta > 0:
        parts.append(MemoryPart("reference model (bf16)", 2 * stored, "both",
                                f"2 B x {P:,} params (algorithm.beta = {inp.beta}){shard_note}"))

    prompts, rows = micro_batch_rows(inp, world)
    img = prompt_image_tokens(arch, inp)
    seq = img + inp.prompt_tokens + inp.max_new_tokens
    problems: list[str] = []
    declared = engine_memory(arch, replace(inp, strategy=strategy))
    if declared is not None:
        parts += declared.parts
        problems += declared.problems
    else:  # the engine samples from the policy's weights, as hf generate does
        if sharded and mixed:
            parts.append(MemoryPart(f"{half} full gather for generate", 2 * P, "rollout",
                                    f"2 B x {P:,} params, unsharded while hf generate samples"))
        elif sharded:
            parts.append(MemoryPart("fp32 full gather for generate", 4 * (P - stored), "rollout",
                                    "the other ranks' shards, unsharded while hf generate samples"))
        elif mixed:
            parts.append(MemoryPart(f"{half} copy for generate", 2 * P, "rollout",
                                    f"2 B x {P:,} params cast for sampling"))
        gen_rows = math.ceil(inp.batch_size / world) * inp.num_generations
        kv = gen_rows * seq * arch.layers * 2 * arch.kv_dim * (2 if mixed else 4)
        parts.append(MemoryPart("KV cache (hf generate)", kv, "rollout",
                                f"{gen_rows} rows x {seq:,} tokens x {arch.layers} layers x 2 x {arch.kv_dim}"))

    act, how = activation_bytes(arch, inp, prompts=prompts, rows=rows)
    parts.append(MemoryPart("activations", act, "update", f"micro-batch of {rows} rows: {how}"))
    parts.append(MemoryPart("logits", rows * (inp.max_new_tokens + 1) * arch.vocab * 4, "update",
                            f"{rows} rows x {inp.max_new_tokens + 1} tokens x {arch.vocab:,} vocab x 4 B"))
    parts.append(MemoryPart("CUDA context", int(CONTEXT_GIB * GiB), "both", "context, workspaces, allocator slack"))
    return MemoryPlan(model=arch.name, source=arch.source, strategy=strategy, gpus=inp.gpus,
                      gpu_memory_gib=inp.gpu_memory_gib, params=P, trainable_params=trainable_full,
                      micro_batch_rows=rows, sequence_tokens=seq, image_tokens=img, parts=parts, problems=problems)


def config_architecture(cfg: Any) -> Architecture:
    """The architecture of a :class:`~syngrpo.config.TrainConfig`'s policy: hub id, directory, shipped name or
    ``tiny``, read without loading weights."""
    m = cfg.model
    return load_architecture(str(SHIPPED_POLICIES.get(m.policy, m.policy)), tiny_options=m.tiny_options,
                             tiny_dir=m.resolved_tiny_dir() if m.policy == "tiny" else None,
                             tiny_family=m.tiny_family())


def plan_config(cfg: Any, *, gpus: int | None = None, gpu_memory_gib: float | None = None,
                strategy: Strategy | None = None, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> MemoryPlan:
    """The plan of a :class:`~syngrpo.config.TrainConfig` (its policy's architecture read as ``syngrpo plan`` does),
    on the GPUs given, else on those the config documents (:func:`target_hardware`)."""
    target = target_hardware(cfg, gpus=gpus, gpu_memory_gib=gpu_memory_gib)
    inp = PlanInputs.from_config(cfg, gpus=target.gpus, gpu_memory_gib=target.gpu_memory_gib,
                                 prompt_tokens=prompt_tokens)
    return plan_memory(config_architecture(cfg), inp, strategy=strategy)


# ---- the machine a plan is made for --------------------------------------------------------------------

#: what a plan assumes when neither a flag nor the config's ``hardware`` section says
DEFAULT_GPUS = 1
DEFAULT_GPU_MEMORY_GIB = 80.0


@dataclass(frozen=True)
class Target:
    """The GPUs a plan is made for, and where each figure came from (printed with the plan)."""

    gpus: int
    gpu_memory_gib: float
    source: str


def target_hardware(cfg: Any, *, gpus: int | None = None, gpu_memory_gib: float | None = None) -> Target:
    """Each figure from its flag when given, else from the config's ``hardware`` section (the machine the config
    is written for, so ``syngrpo plan -c CONFIG`` answers for it with no flags), else one 80 GiB GPU."""
    hw = getattr(cfg, "hardware", None)
    section, default = "the config's hardware section", "default"
    g_src = "--gpus" if gpus is not None else section if hw is not None else default
    m_src = "--gpu-memory" if gpu_memory_gib is not None else section if hw is not None else default
    if g_src == m_src == section:
        source = section
    elif g_src == m_src == default:
        source = "default: the config documents no hardware"
    elif (g_src, m_src) == ("--gpus", "--gpu-memory"):
        source = "--gpus, --gpu-memory"
    else:
        source = f"{g_src}; {m_src}"
    return Target(
        gpus=gpus if gpus is not None else hw.gpus if hw is not None else DEFAULT_GPUS,
        gpu_memory_gib=(gpu_memory_gib if gpu_memory_gib is not None
                        else hw.gpu_memory_gib if hw is not None else DEFAULT_GPU_MEMORY_GIB),
        source=source,
    )


def gpu_counts(batch_size: int) -> list[int]:
    """The GPU counts a run of this batch can use: the trainer gives every rank an equal share of the prompts,
    so the count must divide ``optim.batch_size``."""
    return [n for n in range(1, batch_size + 1) if batch_size % n == 0]


# ---- presentation ------------------------------------------------------------------------------------


def markdown_table(plans: list[MemoryPlan], *, chosen: Strategy | None = None) -> str:
    """Parts as rows, one column per strategy (GiB per GPU)."""
    def head(p: MemoryPlan) -> str:
        star = " (chosen)" if chosen == p.strategy and len(plans) > 1 else ""
        return f"{p.strategy} x {p.gpus if p.strategy != 'single' else 1}{star}"

    names: list[str] = []
    for p in plans:
        for part in p.parts:
            if part.name not in names:
                names.append(part.name)
    lines = ["| part | phase | " + " | ".join(head(p) for p in plans) + " |",
             "|---|---|" + "---:|" * len(plans)]
    for name in names:
        phase = next(part.phase for p in plans for part in p.parts if part.name == name)
        cells = []
        for p in plans:
            part = p.part(name)
            cells.append(f"{part.gib:.2f}" if part is not None else "-")
        lines.append(f"| {name} | {phase} | " + " | ".join(cells) + " |")
    lines.append("| **peak per GPU** (max of the phases) | | "
                 + " | ".join(f"**{p.peak_gib:.2f}**" for p in plans) + " |")
    lines.append(f"| fits in {plans[0].gpu_memory_gib:g} GiB | | "
                 + " | ".join("yes" if p.fits else "**no**" for p in plans) + " |")
    return "\n".join(lines)
