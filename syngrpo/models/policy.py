"""Load a VLM policy: its model and processor through its family, on a device, in a dtype, maybe with LoRA.

One code path serves real checkpoints (``Qwen/Qwen2.5-VL-3B-Instruct``,
``Qwen/Qwen3-VL-2B-Instruct``, ``zai-org/GLM-4.1V-9B-Thinking``, by hub id or
local directory) and the tiny random models of :mod:`syngrpo.models.tiny_policy`.
What differs between VLM families (model class, processor, chat prompt,
suppressed tokens, box coordinates) is asked of the checkpoint's
:class:`~syngrpo.models.family.ModelFamily` plugin; this module names none.
Besides :func:`load_policy`: a model built on the meta device (:func:`empty_weights`,
for the ranks of a sharded run), the frozen reference of the KL term
(:func:`reference_model`), the vision tower.

What a loaded policy is and how prompts become its inputs (:class:`PolicyBundle`,
:class:`PromptBatch`, :func:`encode_prompts`) live in :mod:`syngrpo.models.prompts` and are
re-exported here: ``syngrpo.models.policy`` is the one documented import for both.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from syngrpo.errors import ConfigError, require
from syngrpo.models.family import resolve_family
from syngrpo.models.modules import unwrap_model
from syngrpo.models.prompts import PolicyBundle, PromptBatch, encode_prompts, pixel_budget, render_prompt
from syngrpo.rundir.sharded_checkpoint import consolidated_model_state, is_sharded

# the records and prompt encoding live in syngrpo.models.prompts; the documented import is this module
__all__ = [
    "DType", "PolicyBundle", "PromptBatch", "empty_weights", "encode_prompts", "frozen", "load_policy",
    "merged_lora_state", "pixel_budget",
    "reference_model", "render_prompt", "resolve_device", "resolve_dtype", "vision_tower",
]

DType = Literal["auto", "float32", "bfloat16", "float16"]


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
    """The vision encoder of a VLM: ``visual`` (patch embed, blocks, merger) of the patch-grid families,
    ``vision_tower`` of InternVL (its projector, ``multi_modal_projector``, is not part of it)."""
    base = unwrap_model(model)
    inner = getattr(base, "model", base)
    tower = getattr(inner, "visual", None) or getattr(base, "visual", None) or getattr(inner, "vision_tower", None)
    if tower is None:
        raise ValueError(f"{type(base).__name__} has no vision tower named 'visual' or 'vision_tower'")
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
    """The consolidated weights when ``path`` is a sharded checkpoint's ``model/`` directory (no weight files);
    a LoRA run's with its adapters merged in (:func:`merged_lora_state`)."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return None
    if not is_sharded(folder.parent):
        return None
    return merged_lora_state(consolidated_model_state(folder.parent), folder)


def _gathered_lora_model(fam: Any, path: str, kwargs: dict[str, Any]) -> tuple[Any, str] | None:
    """``(the merged model, its base's path)`` when ``path`` is a gathered LoRA checkpoint's ``model/`` (peft's
    ``adapter_config.json`` and ``adapter_model.safetensors``, no model weights), else ``None``.

    Under LoRA the base never changes, so a non-sharded LoRA run saves the adapters only; the base is the
    policy the run started from, which peft records as ``base_model_name_or_path`` (what resuming reads
    from ``model.policy``).  Loaded, the adapters are merged in (peft's ``merge_and_unload``): ``syngrpo eval``
    and ``export`` read the trained policy as a plain model, as they read a sharded LoRA checkpoint."""
    import json

    folder = Path(path)
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        return None
    if any(p.name != "adapter_model.safetensors" for p in folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return None  # the model's own weights are here: read them
    try:
        base = str(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] or "")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{folder / 'adapter_config.json'}: unreadable ({exc}); the LoRA checkpoint's adapters "
                          "need it to name their base model (base_model_name_or_path)") from None
    fix = (f"{folder} holds LoRA adapters only, to be merged into their base model; set base_model_name_or_path "
           f"in {folder / 'adapter_config.json'} to the policy the run trained from (its model.policy)")
    if not base:
        raise ConfigError(f"{fix}: it names none")
    peft = require("peft", extra="lora", what="reading a LoRA checkpoint (its adapters merged into the base)",
                   hint="pip install peft")
    try:
        model = fam.load_model(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{fix}: {base!r} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    return peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload(), base


def merged_lora_state(state: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    """A peft model's full state (a sharded FSDP + LoRA checkpoint) as the plain model's: ``W + scaling * B @ A``.

    Names lose peft's ``base_model.model.`` and ``.base_layer``; ``scaling`` is ``lora_alpha / r`` (``/ sqrt(r)``
    with ``use_rslora``) from the ``adapter_config.json`` the checkpoint wrote beside its config.  A state without
    adapters is returned as it is.
    """
    import json

    if not any(".lora_A." in k for k in state):
        return state
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"{folder}: the sharded checkpoint holds LoRA adapters but no adapter_config.json "
                          "(their r and alpha); it was written before FSDP trained LoRA -- resume it instead")
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scaling = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        layer = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        if layer is not None and name.endswith(".base_layer.weight") and f"{layer}.lora_A.default.weight" in state:
            a, b = state[f"{layer}.lora_A.default.weight"].float(), state[f"{layer}.lora_B.default.weight"].float()
            delta = b @ a
            tensor = (tensor.float() + (delta.T if cfg.get("fan_in_fan_out") else delta) * scaling).to(tensor.dtype)
        out[plain] = tensor
    return out


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

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = str(name_or_path)
    config = AutoConfig.from_pretrained(path)
    model_type = getattr(config, "model_type", "")
    fam = resolve_family(family, model_type, source=repr(path))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    gathered_lora = None
    if state_dict is None and not empty:
        state_dict = _sharded_checkpoint_weights(path)
        if state_dict is None:
            gathered_lora = _gathered_lora_model(fam, path, kwargs)
    if empty:
        model = _empty_model(fam, path, config, dev, **kwargs)
    elif gathered_lora is not None:  # a LoRA checkpoint of adapters only: its base with them merged
        model = _with_generation_config(gathered_lora[0], path).to(dev)
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
    patch_size, merge_size = fam.vision_sizes(processor.image_processor)
    return PolicyBundle(
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        suppress_token_ids=suppress,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        name_or_path=gathered_lora[1] if gathered_lora is not None else path,  # vLLM reads the base's files
        model_type=model_type,
        device=dev,
        dtype=torch_dtype,
        patch_size=patch_size,
        merge_size=merge_size,
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
