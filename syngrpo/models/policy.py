"""Load a VLM policy and turn (image, text) pairs into model inputs.

One code path serves real checkpoints (``Qwen/Qwen2.5-VL-3B-Instruct``,
``Qwen/Qwen3-VL-2B-Instruct``, ``zai-org/GLM-4.1V-9B-Thinking``, by hub id or
local directory) and the tiny random models of :mod:`syngrpo.models.tiny_policy`.
What differs between VLM families (model class, processor, chat prompt,
suppressed tokens, box coordinates) is asked of the checkpoint's
:class:`~syngrpo.models.family.ModelFamily` plugin; this module names none.

Two facts from ``REFERENCE.md`` shape this module:

* every forward must receive ``mm_token_type_ids``; without it transformers 5
  silently uses 1-D positions and log-probs drift from ``generate()`` by ~1e-3.
  :class:`PromptBatch` always carries it and :meth:`PromptBatch.model_inputs`
  always passes it;
* the processor resizes each image to a multiple of the patch grid, and each
  family writes boxes in its own convention (Qwen2.5-VL: pixels of that resized
  image; Qwen2-VL, Qwen3-VL, GLM-4.1V: 0-1000 relative).  :attr:`PromptBatch.frames`
  holds, for each prompt, the :class:`~syngrpo.perception.geometry.ImageTransform` from the
  original image to the frame the model answers in (the processor's resize composed
  with the family's convention); a task maps predictions back with
  ``frame.inverse()`` (the box-frame confusion VLM-R1's users report).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from syngrpo.errors import ConfigError, require
from syngrpo.models.modules import unwrap_model
from syngrpo.perception.geometry import ImageTransform
from syngrpo.rundir.sharded_checkpoint import consolidated_model_state, is_sharded

DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class PolicyBundle:
    """A loaded policy: the model and everything needed to prompt it and read its output."""

    model: Any
    processor: Any
    tokenizer: Any
    #: token ids never to sample (the vision placeholders; the family names them)
    suppress_token_ids: list[int]
    #: generation stops at any of these (the family's end-of-turn token first, e.g. ``<|im_end|>``)
    eos_token_ids: list[int]
    pad_token_id: int
    name_or_path: str
    model_type: str
    device: torch.device
    dtype: torch.dtype
    patch_size: int
    merge_size: int
    #: default pixel budget for :func:`encode_prompts` (``None`` keeps the processor's)
    max_pixels: int | None = None
    min_pixels: int | None = None
    #: true when ``model`` is a peft model with LoRA adapters
    lora: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: the :class:`~syngrpo.models.family.ModelFamily` that loaded it (prompt, frames, scoring)
    family: Any = None

    @property
    def image_token_id(self) -> int:
        return int(self.base_model.config.image_token_id)

    @property
    def base_model(self) -> Any:
        """The transformers model under any peft wrapper."""
        return unwrap_model(self.model)

    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
        """Texts of token rows, special tokens stripped; positions where ``mask`` is 0 are dropped."""
        rows = []
        for i in range(ids.shape[0]):
            row = ids[i] if mask is None else ids[i][mask[i].bool()]
            rows.append(row.tolist())
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass
class PromptBatch:
    """Processor outputs for a batch of one-image prompts, plus the image frames.

    Rows are prompts.  After :meth:`expand` each prompt appears ``group_size``
    times in a row (p0 x G, p1 x G, ...), the order ``generate`` returns.
    """

    input_ids: torch.Tensor  # (B, P) left-padded
    attention_mask: torch.Tensor  # (B, P)
    pixel_values: torch.Tensor  # (sum of patches, C * temporal * patch * patch)
    image_grid_thw: torch.Tensor  # (B, 3)
    mm_token_type_ids: torch.Tensor  # (B, P) 0 text, 1 image
    #: per row: original image -> the frame the model writes boxes in (the processor's resize composed with
    #: the family's coordinate convention); tasks map answers back with ``frame.inverse()``
    frames: list[ImageTransform]
    #: how many consecutive rows share one prompt (1 = not expanded)
    group_size: int = 1
    #: the rendered prompt text of each row (chat template applied), for logs and engines that tokenize
    prompts: list[str] = field(default_factory=list)
    #: the original (RGB) image of each row, for engines that process images themselves (vLLM)
    images: list[Any] = field(default_factory=list)
    #: per row: original image -> model-input pixels (width = grid_w * patch); equals ``frames`` for
    #: families that answer in pixels (dense vision targets use it)
    input_frames: list[ImageTransform] = field(default_factory=list)
    #: the policy's :class:`~syngrpo.models.family.ModelFamily` (scoring asks it how to run the forward)
    family: Any = None

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_prompts(self) -> int:
        return self.num_rows // self.group_size

    @property
    def prompt_length(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def patches_per_row(self) -> list[int]:
        return [int(n) for n in self.image_grid_thw.prod(-1).tolist()]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of the model's forward / ``generate`` (``mm_token_type_ids`` always included)."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
            "mm_token_type_ids": self.mm_token_type_ids,
        }

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptBatch:
        """Tensors on ``device``; ``dtype`` (if given) applies to the pixel values only."""
        pixels = self.pixel_values.to(device=device, dtype=dtype) if dtype else self.pixel_values.to(device)
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            pixel_values=pixels,
            image_grid_thw=self.image_grid_thw.to(device),
            mm_token_type_ids=self.mm_token_type_ids.to(device),
        )

    def select(self, rows: Sequence[int], *, group_size: int | None = None) -> PromptBatch:
        """The given rows (pixel values follow their rows); ``group_size`` of the result defaults to 1."""
        rows = [int(r) for r in rows]
        counts = self.patches_per_row()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        pixel_chunks = [self.pixel_values[starts[r] : starts[r + 1]] for r in rows]
        return PromptBatch(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            pixel_values=torch.cat(pixel_chunks, 0) if pixel_chunks else self.pixel_values[:0],
            image_grid_thw=self.image_grid_thw[idx],
            mm_token_type_ids=self.mm_token_type_ids[idx],
            frames=[self.frames[r] for r in rows],
            group_size=group_size or 1,
            prompts=[self.prompts[r] for r in rows] if self.prompts else [],
            images=[self.images[r] for r in rows] if self.images else [],
            input_frames=[self.input_frames[r] for r in rows] if self.input_frames else [],
            family=self.family,
        )

    def expand(self, group_size: int) -> PromptBatch:
        """Each prompt repeated ``group_size`` times in a row (p0 x G, p1 x G, ...)."""
        if self.group_size != 1:
            raise ValueError(f"batch is already expanded (group_size={self.group_size}); collapse() it first")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        rows = [r for r in range(self.num_rows) for _ in range(group_size)]
        return self.select(rows, group_size=group_size)

    def collapse(self) -> PromptBatch:
        """One row per prompt (undoes :meth:`expand`)."""
        if self.group_size == 1:
            return self
        return self.select(range(0, self.num_rows, self.group_size), group_size=1)

    def select_prompts(self, prompt_indices: Sequence[int]) -> PromptBatch:
        """Whole groups of the given prompts, keeping ``group_size`` (micro-batches of a step)."""
        g = self.group_size
        rows = [p * g + j for p in prompt_indices for j in range(g)]
        return self.select(rows, group_size=g)


# ---- loading --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``auto`` = ``cuda`` when available, else ``cpu``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: DType | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` = float32 on CPU, bfloat16 on a GPU that supports it (else float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}")
    return table[dtype]


def vision_tower(model: Any) -> torch.nn.Module:
    """The vision encoder (patch embed, blocks, merger) of a patch-grid VLM (``visual``)."""
    base = unwrap_model(model)
    inner = getattr(base, "model", base)
    tower = getattr(inner, "visual", None) or getattr(base, "visual", None)
    if tower is None:
        raise ValueError(f"{type(base).__name__} has no vision tower named 'visual'")
    return tower


def _apply_lora(model: Any, lora: dict[str, Any]) -> Any:
    peft = require("peft", extra="lora", what="LoRA adapters (model.lora)", hint="pip install peft")
    opts = {k: v for k, v in dict(lora).items() if k != "enabled"}
    targets = opts.pop("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])
    if isinstance(targets, (list, tuple)):
        # Only the language model's projections: the vision tower has its own q/k/v names.
        targets = r".*language_model.*\.(" + "|".join(targets) + r")$"
    config = peft.LoraConfig(
        r=int(opts.pop("r", 16)),
        lora_alpha=int(opts.pop("alpha", opts.pop("lora_alpha", 32))),
        lora_dropout=float(opts.pop("dropout", opts.pop("lora_dropout", 0.05))),
        target_modules=targets,
        task_type="CAUSAL_LM",
        **opts,
    )
    return peft.get_peft_model(model, config)


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory) and their buffers for real.

    The weights of such a model arrive later (broadcast into FSDP shards, or read from a sharded
    checkpoint), but buffers computed at construction -- the rotary ``inv_freq`` tables, which are not
    in any state dict -- must be right, so only ``register_parameter`` is redirected (what accelerate's
    ``init_empty_weights(include_buffers=False)`` does).
    """
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def _with_generation_config(model: Any, path: str) -> Any:
    """``model`` with the checkpoint's ``generation_config.json`` (a model built from its config alone has
    defaults derived from the config; ``generate`` and the EOS ids read this one)."""
    from transformers import GenerationConfig

    with contextlib.suppress(OSError, ValueError):
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def _empty_model(fam: Any, path: str, config: Any, device: torch.device, **kwargs: Any) -> Any:
    """The family's model class built from ``config`` with meta parameters and real buffers on ``device``."""
    with empty_weights():
        model = fam.model_class()._from_config(config, **kwargs)
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                module._buffers[name] = buf.to(device)
    return _with_generation_config(model, path)


def _sharded_checkpoint_weights(path: str) -> dict[str, torch.Tensor] | None:
    """The consolidated weights when ``path`` is a sharded checkpoint's ``model/`` directory (no weight files)."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return None
    return consolidated_model_state(folder.parent) if is_sharded(folder.parent) else None


def load_policy(
    name_or_path: str | Path,
    *,
    dtype: DType | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
    freeze_vision: bool = False,
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    family: Any = "auto",
    empty: bool = False,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> PolicyBundle:
    """Load a VLM policy (hub id or directory) with its processor, through its model family.

    ``empty`` builds the architecture only, parameters on the meta device (:func:`empty_weights`):
    what every rank but rank 0 of a sharded run holds until :meth:`syngrpo.scale.parallel.Parallel.shard_from_main`
    broadcasts rank 0's weights into its shards, so host memory never holds a second whole model.
    ``state_dict`` replaces the directory's weight files (a sharded checkpoint consolidated in memory,
    :func:`syngrpo.rundir.sharded_checkpoint.consolidated_model_state`; the directory then needs only its config).
    The ``model/`` directory of a sharded checkpoint (config and processor, the weights beside it in
    ``sharded/``) is consolidated so by itself: ``model.policy``, ``syngrpo eval`` and describers read it
    like any model directory (vLLM, which reads files, needs ``syngrpo export`` first).

    ``family`` is a registered family name, a :class:`~syngrpo.models.family.ModelFamily`,
    or ``auto`` (the family that reads the checkpoint's ``config.json`` ``model_type``).

    ``freeze_vision`` stops gradients into the vision tower (VLM-R1's
    ``freeze_vision_modules``); ``lora`` (``{"r", "alpha", "dropout",
    "target_modules"}``) wraps the language model's projections in peft LoRA
    adapters (needs ``pip install 'syngrpo[lora]'``); ``gradient_checkpointing``
    trades compute for activation memory (and turns shared-prefix scoring off, see
    :func:`syngrpo.models.scoring.supports_shared_prefix`).
    """
    from transformers import AutoConfig

    from syngrpo.models.family import resolve_family

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = str(name_or_path)
    config = AutoConfig.from_pretrained(path)
    model_type = getattr(config, "model_type", "")
    fam = resolve_family(family, model_type, source=repr(path))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if state_dict is None and not empty:
        state_dict = _sharded_checkpoint_weights(path)
    if empty:
        model = _empty_model(fam, path, config, dev, **kwargs)
    elif state_dict is not None:  # transformers takes a state dict with a config, not with a directory
        model = fam.model_class().from_pretrained(None, config=config, state_dict=dict(state_dict), **kwargs)
        model = _with_generation_config(model, path).to(dev)
    else:
        model = fam.load_model(path, **kwargs).to(dev)
    processor = fam.load_processor(path)
    tokenizer = processor.tokenizer

    if freeze_vision:
        for p in vision_tower(model).parameters():
            p.requires_grad_(False)
    if gradient_checkpointing:
        kwargs_ckpt = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs_ckpt)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs_ckpt)
        if freeze_vision or lora:
            model.enable_input_require_grads()
    if lora:
        model = _apply_lora(model, lora)

    gen = unwrap_model(model).generation_config
    eos = fam.eos_token_ids(tokenizer, gen)
    if not eos:
        raise ConfigError(f"{path!r}: neither the {fam.name} family nor the checkpoint names an end-of-turn token")
    pad = gen.pad_token_id if gen.pad_token_id is not None else tokenizer.pad_token_id
    if pad is None:
        pad = eos[-1]
    suppress = fam.suppress_token_ids(tokenizer)
    image_processor = processor.image_processor
    return PolicyBundle(
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        suppress_token_ids=suppress,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        name_or_path=path,
        model_type=model_type,
        device=dev,
        dtype=torch_dtype,
        patch_size=int(image_processor.patch_size),
        merge_size=int(image_processor.merge_size),
        max_pixels=max_pixels,
        min_pixels=min_pixels,
        lora=bool(lora),
        options={"attn_implementation": attn_implementation, "freeze_vision": freeze_vision,
                 "gradient_checkpointing": gradient_checkpointing},
        family=fam,
    )


def reference_model(bundle: PolicyBundle, dtype: torch.dtype | None = None) -> Any:
    """A frozen copy of the policy as it is now (the KL reference of GRPO), in eval mode.

    ``dtype`` (e.g. the bf16 compute dtype of a mixed-precision run) casts the copy: it is
    never updated, so it needs no float32 master.
    """
    return frozen(copy.deepcopy(bundle.model), dtype)


def frozen(model: Any, dtype: torch.dtype | None = None) -> Any:
    """``model`` itself, cast to ``dtype`` (parameters and floating buffers), in eval mode, without gradients:
    what :func:`reference_model` makes of its copy, and a sharded run of a reference it loads or builds."""
    if dtype is not None:
        model.to(dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---- prompts --------------------------------------------------------------------------------------


def render_prompt(bundle: PolicyBundle, text: str) -> str:
    """The chat-formatted prompt for one image followed by ``text``, ending where the answer starts."""
    family = _family(bundle)
    return family.render_prompt(bundle.processor, text)


def _family(bundle: PolicyBundle) -> Any:
    """The bundle's model family (a bundle built by hand is looked up by its model type)."""
    if bundle.family is None:
        from syngrpo.models.family import family_for_model_type

        bundle.family = family_for_model_type(bundle.model_type)
    return bundle.family


def pixel_budget(bundle: PolicyBundle, *, max_pixels: int | None = None,
                 min_pixels: int | None = None) -> dict[str, int]:
    """The image processor's ``size`` for this bundle: ``{"shortest_edge": min pixels, "longest_edge": max pixels}``.

    ``max_pixels`` / ``min_pixels`` override the bundle's (``model.max_pixels`` / ``min_pixels``), which
    override the processor's own.  :func:`encode_prompts` passes it to the processor, and the vLLM engine
    passes the same dict to vLLM's (``mm_processor_kwargs={"size": ...}``): ``size`` is the key every
    patch-grid family's image processor reads (GLM-4.1V's ignores ``max_pixels``), so an image is
    sampled and scored at one resolution.
    """
    max_pixels = max_pixels if max_pixels is not None else bundle.max_pixels
    min_pixels = min_pixels if min_pixels is not None else bundle.min_pixels
    own = bundle.processor.image_processor.size
    get = own.get if isinstance(own, dict) else lambda k: getattr(own, k, None)  # dict or transformers' SizeDict
    low = min_pixels if min_pixels is not None else get("shortest_edge")
    high = max_pixels if max_pixels is not None else get("longest_edge")
    if low is None or high is None:
        raise ValueError(f"{type(bundle.processor.image_processor).__name__} has no pixel budget "
                         "(size.shortest_edge / size.longest_edge): set model.min_pixels and model.max_pixels")
    size = {"shortest_edge": int(low), "longest_edge": int(high)}
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
    return size


def encode_prompts(
    bundle: PolicyBundle,
    images: Sequence[Any],
    texts: Sequence[str],
    *,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> PromptBatch:
    """Tokenize one-image prompts (left padded) and record each image's frames.

    ``frames[i]`` maps image ``i`` to the frame the family answers in;
    ``input_frames[i]`` to the model-input pixels (the processor's resize).

    ``images`` are PIL images (any mode; converted to RGB).  ``max_pixels`` /
    ``min_pixels`` override the processor's pixel budget (default: the bundle's,
    then the processor's).
    """
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images for {len(texts)} texts; one image per prompt")
    if not texts:
        raise ValueError("encode_prompts needs at least one prompt")
    processor = bundle.processor
    prompts = [render_prompt(bundle, t) for t in texts]
    rgb = [im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in images]
    kwargs: dict[str, Any] = {}
    if any(v is not None for v in (max_pixels, min_pixels, bundle.max_pixels, bundle.min_pixels)):
        kwargs["size"] = pixel_budget(bundle, max_pixels=max_pixels, min_pixels=min_pixels)
    enc = processor(text=prompts, images=rgb, padding=True, padding_side="left", return_tensors="pt", **kwargs)
    grid = enc["image_grid_thw"]
    family = _family(bundle)
    input_frames = [family.input_frame(im.width, im.height, g, bundle.patch_size)
                    for im, g in zip(rgb, grid.tolist(), strict=True)]
    frames = [family.answer_frame(f) for f in input_frames]
    mm = enc.get("mm_token_type_ids")
    if mm is None:  # older processors: derive it (image placeholders are type 1)
        mm = (enc["input_ids"] == bundle.image_token_id).long()
    batch = PromptBatch(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        pixel_values=enc["pixel_values"],
        image_grid_thw=grid,
        mm_token_type_ids=mm,
        frames=frames,
        prompts=prompts,
        images=list(rgb),
        input_frames=input_frames,
        family=family,
    )
    return batch.to(bundle.device, dtype=bundle.dtype)
