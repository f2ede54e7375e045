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
* **vLLM reservation** (``rollout.engine: vllm``): ``gpu_memory_utilization`` x GPU memory, held
  all the time, or only while sampling when the engine sleeps during the update
  (``engine_options.enable_sleep_mode``).  Inside it vLLM keeps its bf16 weights and a KV cache
  that must hold at least one sequence of ``max_model_len`` tokens, or vLLM refuses to start
  (:func:`vllm_kv_cache`); a run whose reservation cannot does not fit.
* **activations** of one micro-batch (see :func:`activation_bytes`) and **logits**
  (rows x (completion tokens + 1) x vocabulary x 4 B: the bf16 logits and their gradient).
* **KV cache of hf generate**: rows x sequence x layers x 2 (keys, values) x kv width x 2 B.
* a fixed **CUDA context** allowance (:data:`CONTEXT_GIB`).

Under ``fsdp`` every sharded part is divided over the world exactly as FSDP2 does it: each
parameter tensor's dim 0 is split in ceil(dim0 / N) rows per rank. A step has two phases
that never overlap, sampling (rollout) and the update; the peak is the larger of the two sums.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from syngrpo.models.architecture import Architecture

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
    vllm_utilization: float = 0.3
    vllm_sleep: bool = False
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
    #: the vllm engine's ``max_model_len`` / ``prompt_text_tokens`` options (None: derived, see vllm_kv_cache)
    vllm_max_model_len: int | None = None
    vllm_prompt_text_tokens: int | None = None
    #: ``eval.max_new_tokens`` (0: the rollout's); vLLM's sequence budget covers the longer of the two
    eval_max_new_tokens: int = 0

    @classmethod
    def from_config(cls, cfg: Any, *, gpus: int, gpu_memory_gib: float,
                    prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> PlanInputs:
        """Read a :class:`~syngrpo.config.TrainConfig`."""
        options = dict(cfg.rollout.engine_options)
        parallel = getattr(cfg, "parallel", None)
        return cls(
            dtype="bfloat16" if cfg.model.dtype == "auto" else cfg.model.dtype,  # auto = bf16 on a GPU
            gradient_checkpointing=cfg.model.gradient_checkpointing, freeze_vision=cfg.model.freeze_vision,
            lora=cfg.model.lora.enabled, lora_r=cfg.model.lora.r, lora_targets=tuple(cfg.model.lora.target_modules),
            beta=cfg.algorithm.beta, engine=cfg.rollout.engine,
            vllm_utilization=float(options.get("gpu_memory_utilization", 0.3)),
            vllm_sleep=bool(options.get("enable_sleep_mode", False)),
            batch_size=cfg.optim.batch_size, grad_accum=cfg.optim.grad_accum,
            num_generations=cfg.rollout.num_generations, max_new_tokens=cfg.rollout.max_new_tokens,
            max_pixels=cfg.model.max_pixels, shared_prefix=cfg.algorithm.shared_prefix,
            strategy=getattr(parallel, "strategy", "auto"), gpus=gpus, gpu_memory_gib=gpu_memory_gib,
            prompt_tokens=prompt_tokens,
            vllm_max_model_len=options.get("max_model_len"), vllm_prompt_text_tokens=options.get("prompt_text_tokens"),
            eval_max_new_tokens=int(getattr(getattr(cfg, "eval", None), "max_new_tokens", None) or 0),
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


def vllm_max_model_len(image_tokens: int, prompt_text_tokens: int, max_new_tokens: int) -> int:
    """The vllm engine's ``max_model_len`` when none is given: the longest sequence the run can make.

    Image tokens at the pixel budget (:func:`tokens_for_pixels`) + the prompt's text allowance
    (``prompt_text_tokens``; the engine refuses a longer prompt, naming the option) + the longest
    completion (rollout or eval ``max_new_tokens``). Without it vLLM sizes for the model's whole
    context (128k tokens for Qwen2.5-VL).
    """
    return int(image_tokens) + int(prompt_text_tokens) + int(max_new_tokens)


def vllm_kv_cache(arch: Architecture, inp: PlanInputs) -> tuple[str, str | None]:
    """What the vLLM reservation must hold, and the reason it cannot (``None`` when it can).

    vLLM keeps the policy in bf16 (2 B/param, every rank a whole copy: ``tensor_parallel_size`` 1) and
    gives the rest of its ``gpu_memory_utilization`` share to the KV cache (2 B x 2 (keys, values) x layers
    x kv width per token); at start-up it refuses a cache that cannot hold one sequence of
    ``max_model_len`` tokens. Not counted: vLLM's own activation peak of its profile run and CUDA graphs,
    so keep some slack beyond this.
    """
    max_new = max(inp.max_new_tokens, inp.eval_max_new_tokens)
    img = image_tokens(arch, inp.max_pixels)
    text = inp.vllm_prompt_text_tokens if inp.vllm_prompt_text_tokens is not None else inp.prompt_tokens
    seq = inp.vllm_max_model_len or vllm_max_model_len(img, text, max_new)
    per_token = 2 * 2 * arch.layers * arch.kv_dim
    weights = 2 * arch.params
    reserve = inp.vllm_utilization * inp.gpu_memory_gib * GiB
    room = reserve - weights
    sequences = room / (seq * per_token) if room > 0 else 0.0
    world = inp.gpus if inp.resolved_strategy in ("ddp", "fsdp") else 1
    prompts = math.ceil(inp.batch_size / world)
    rollout_tokens = prompts * (img + text) + prompts * inp.num_generations * max_new  # prompts shared per group
    how = (f"bf16 weights {weights / GiB:.2f} GiB + KV cache {per_token * seq / GiB:.3f} GiB per sequence of "
           f"max_model_len {seq:,} ({'set' if inp.vllm_max_model_len else f'{img:,} image + {text} text + {max_new} new'}"
           f" tokens): room for {sequences:.1f} such sequences; a whole rollout of the rank "
           f"({prompts} prompts x G {inp.num_generations}) needs {rollout_tokens * per_token / GiB:.2f} GiB")
    problem = None
    if sequences < 1:
        need = (weights + seq * per_token) / (inp.gpu_memory_gib * GiB)
        problem = (f"vLLM cannot start: gpu_memory_utilization {inp.vllm_utilization} x {inp.gpu_memory_gib:g} GiB "
                   f"holds the bf16 weights ({weights / GiB:.2f} GiB) but not the KV cache of one "
                   f"{seq:,}-token sequence ({per_token * seq / GiB:.2f} GiB); raise "
                   f"rollout.engine_options.gpu_memory_utilization above {need:.2f} or lower max_model_len")
    return how, problem


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
    img = image_tokens(arch, inp.max_pixels)
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
           + (f" + {vision_images} image(s) x {img * arch.merge_size ** 2:,} patches x {arch.vision_layers} "
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
        # adapters are small, replicated whole (ceil(r / N) rows would be the shard; counted whole)
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
    if mixed:
        parts.append(MemoryPart("master weights (fp32)", 4 * stored, "both", f"4 B x {P:,} params{shard_note}"))
    else:
        parts.append(MemoryPart("weights (fp32)", 4 * stored, "both", f"4 B x {P:,} params{shard_note}"))

    if mixed:
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
    img = image_tokens(arch, inp.max_pixels)
    seq = img + inp.prompt_tokens + inp.max_new_tokens
    problems: list[str] = []
    if inp.engine == "vllm":
        reserve = int(inp.vllm_utilization * inp.gpu_memory_gib * GiB)
        inside, problem = vllm_kv_cache(arch, inp)
        problems += [problem] if problem else []
        parts.append(MemoryPart("vLLM reservation", reserve, "rollout" if inp.vllm_sleep else "both",
                                f"gpu_memory_utilization {inp.vllm_utilization} x {inp.gpu_memory_gib:g} GiB"
                                + (" (asleep during the update)" if inp.vllm_sleep else "") + f"; holds {inside}"))
    else:
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
    from syngrpo.config import SHIPPED_POLICIES
    from syngrpo.models.architecture import load_architecture

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


# ---- advice ----------------------------------------------------------------------------------------


#: image tokens the shipped paper configs allow (``max_pixels: 1003520`` for Qwen2.5-VL: COCO images pass unresized)
PAPER_IMAGE_TOKENS = 1280


def knobs(inp: PlanInputs, arch: Architecture | None = None) -> list[tuple[str, PlanInputs]]:
    """The settings worth turning when a run does not fit, each as the changed inputs (with ``arch``, the image
    budget too: it needs the architecture's patch size)."""
    out: list[tuple[str, PlanInputs]] = []
    if inp.resolved_strategy != "fsdp":
        out.append(("--set parallel.strategy=fsdp", replace(inp, strategy="fsdp")))
    more = next((n for n in gpu_counts(inp.batch_size) if n > inp.gpus), None)
    if more is not None:
        out.append((f"more GPUs (--gpus {more}, fsdp)", replace(inp, strategy="fsdp", gpus=more)))
    if arch is not None:
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
    if not inp.lora:
        if inp.resolved_strategy == "fsdp":  # the trainer shards full fine-tuning only
            out.append(("--set model.lora.enabled=true --set parallel.strategy=ddp (LoRA runs replicated)",
                        replace(inp, lora=True, strategy="ddp")))
        else:
            out.append(("--set model.lora.enabled=true", replace(inp, lora=True)))
    per_rank = math.ceil(inp.batch_size / (inp.gpus if inp.resolved_strategy != "single" else 1))
    if inp.grad_accum < per_rank:
        out.append((f"--set optim.grad_accum={per_rank} (one prompt per micro-batch)",
                    replace(inp, grad_accum=per_rank)))
    if inp.engine == "vllm":
        if not inp.vllm_sleep:
            out.append(("--set rollout.engine_options.enable_sleep_mode=true", replace(inp, vllm_sleep=True)))
        if inp.vllm_utilization > 0.2:
            out.append(("--set rollout.engine_options.gpu_memory_utilization=0.2",
                        replace(inp, vllm_utilization=0.2)))
    if inp.beta > 0:
        out.append(("--set algorithm.beta=0 (no reference model)", replace(inp, beta=0.0)))
    return [(label, changed) for label, changed in out if runnable(changed)]


def runnable(inp: PlanInputs) -> bool:
    """Whether the trainer accepts this setting: ``fsdp`` shards full fine-tuning in float32 or bfloat16 only
    (no LoRA, no float16), so a knob or a GPU count that needs such a combination is no advice."""
    return not (inp.resolved_strategy == "fsdp" and (inp.lora or inp.dtype == "float16"))


def advice(arch: Architecture, inp: PlanInputs) -> list[tuple[str, float, bool]]:
    """(knob, peak GiB with it, fits) for every knob of :func:`knobs`, best first."""
    rows = []
    for label, changed in knobs(inp, arch):
        p = plan_memory(arch, changed)
        rows.append((label, p.peak_gib, p.fits))
    return sorted(rows, key=lambda r: r[1])


@dataclass
class Fix:
    """A setting that makes a run fit: what to pass (``--gpus`` / ``--set``), and the plan with it."""

    setting: str
    plan: MemoryPlan


#: how far each knob's field reaches: 0 how the memory is laid out (what is learned stays the same), 1 what the
#: model sees (the image budget), 2 what is trained (frozen vision, adapters, no KL term); a field not named
#: here (a new knob) counts as 1
KNOB_TIERS = {"strategy": 0, "gradient_checkpointing": 0, "grad_accum": 0, "vllm_sleep": 0, "vllm_utilization": 0,
              "max_pixels": 1, "freeze_vision": 2, "lora": 2, "beta": 2}


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


def smallest_knob_set(arch: Architecture, inp: PlanInputs, *, most: int = 3) -> Fix | None:
    """The smallest set of knobs of :func:`knobs` (at most ``most``, on these GPUs) that together make the run
    fit. Smallest means least intrusive first (:data:`KNOB_TIERS`: a set whose farthest-reaching knob only
    lays memory out differently beats one that lowers the image budget, which beats one that changes what is
    trained, however few knobs that one needs), then the fewest knobs, then the lowest peak."""
    import itertools

    fields = [f for f in PlanInputs.__dataclass_fields__ if f != "gpus"]
    options = []
    for label, changed in knobs(inp, arch):
        if changed.gpus != inp.gpus:
            continue  # GPU counts: smallest_gpu_count
        delta = {f: getattr(changed, f) for f in fields if getattr(changed, f) != getattr(inp, f)}
        tier = max((KNOB_TIERS.get(f, 1) for f in delta), default=0)
        options.append((tier, label.split(" (")[0], delta))
    best: tuple[Any, ...] | None = None
    for size in range(1, most + 1):
        for combo in itertools.combinations(options, size):
            merged: dict[str, Any] = {}
            for _, _, delta in combo:
                if any(k in merged and merged[k] != v for k, v in delta.items()):
                    break  # two knobs that set one field differently
                merged.update(delta)
            else:
                if not runnable(replace(inp, **merged)):
                    continue
                plan = plan_memory(arch, replace(inp, **merged))
                key = (max(t for t, _, _ in combo), size, plan.peak_bytes)
                if plan.fits and (best is None or key < best[0]):
                    best = (key, " ".join(label for _, label, _ in sorted(combo, key=lambda c: c[0])), plan)
    return None if best is None else Fix(best[1], best[2])


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
