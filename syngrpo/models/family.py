"""The ``ModelFamily`` contract: everything syngrpo needs to know about one kind of VLM checkpoint.

A family is a plugin (hook ``register_model_families``), like a task or a
synthesizer, so that the core never branches on a model type.  It answers
VLM-R1's per-family questions behind one small interface:

* which checkpoints it reads (``model_types``: the ``model_type`` of their
  ``config.json``), and how to load model and processor (an image-only processor
  where torchvision is absent);
* how the chat prompt with its image(s) and the task's question is written, and how many
  images one prompt may show (``max_images``);
* which token ids must never be sampled (vision placeholders) and which end a turn;
* **its coordinate convention**: the frame its boxes and points are written in,
  as an :class:`~syngrpo.perception.geometry.ImageTransform` from the original image.  The
  processor's resize (original -> model-input pixels) is composed with the
  convention (identity for absolute pixels of the image the model saw; a resize to
  ``[0, 1000]²`` for 0-1000 relative coordinates), and that composed map is what
  :attr:`syngrpo.models.policy.PromptBatch.frames` holds.  Tasks, rewards,
  evaluation, the SFT warm start and the data server only ever use ``frames``, so
  they are family-agnostic by construction;
* how completions are scored (which per-token inputs such as ``mm_token_type_ids``
  the forward needs, and whether shared-prefix scoring applies);
* the request shape of the vLLM engine;
* how to build a tiny random model of its architecture offline.

The base class implements all of this for the patch-grid VLMs transformers 5
ships (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4.1V: pixel patches + ``image_grid_thw``
+ ``mm_token_type_ids``, 3-D rotary positions); a family overrides what differs.
Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

# ``model.family: auto`` and the family ``policy: tiny`` builds: config values, defined with the config
from syngrpo.config.learning import AUTO, DEFAULT_TINY_FAMILY  # noqa: F401 (DEFAULT_TINY_FAMILY: re-exported)
from syngrpo.errors import ConfigError
from syngrpo.perception.geometry import ImageTransform


@dataclass(frozen=True)
class CoordinateConvention:
    """How a family writes box and point coordinates, with where that is documented.

    ``kind="pixels"``: absolute pixels of the (resized) image the model saw.
    ``kind="relative"``: ``0..scale`` along each axis of the image, whatever its size
    (Qwen2-VL, Qwen3-VL, GLM-4.1V: ``scale=1000``).
    """

    kind: Literal["pixels", "relative"]
    scale: int = 1000
    #: where the convention is documented (model card, cookbook, paper)
    source: str = ""

    def answer_frame(self, input_frame: ImageTransform) -> ImageTransform:
        """Original image -> the frame answers are written in, given original -> model-input pixels."""
        if self.kind == "pixels":
            return input_frame
        w, h = input_frame.width, input_frame.height
        if w <= 0 or h <= 0:
            raise ValueError("a relative convention needs the model-input size (the frame's width and height)")
        return input_frame.then(ImageTransform.resize(w, h, self.scale, self.scale))

    def describe(self) -> str:
        return "absolute pixels of the resized image" if self.kind == "pixels" else f"0-{self.scale} relative"


class ModelFamily:
    """One VLM family.  Subclass it, set the class attributes, implement :meth:`model_class`,
    :meth:`processor_class` and :meth:`build_tiny`; override the rest where the family differs.
    """

    #: registry name (``model.family``)
    name: ClassVar[str] = ""
    #: ``config.json`` ``model_type`` values of this family's checkpoints
    model_types: ClassVar[tuple[str, ...]] = ()
    #: how boxes are written
    coordinates: ClassVar[CoordinateConvention] = CoordinateConvention("pixels")
    #: special tokens only the processor may place (never sampled by any engine)
    suppress_tokens: ClassVar[tuple[str, ...]] = ()
    #: tokens that end the assistant's turn, the end-of-turn token first (SFT targets end with it)
    eos_tokens: ClassVar[tuple[str, ...]] = ()
    #: per-token inputs of the forward that a completion extends with zeros (text)
    token_type_keys: ClassVar[tuple[str, ...]] = ("mm_token_type_ids",)
    #: the KV-cache prefix path of :mod:`syngrpo.models.scoring` applies (needs ``model.model.get_rope_index``)
    shared_prefix: ClassVar[bool] = True
    #: the dense vision pre-training of the warm start applies (:mod:`syngrpo.train.vision_pretrain`: patch grids)
    dense_vision_pretrain: ClassVar[bool] = True
    #: a real checkpoint of the family, for docs and errors
    example_checkpoint: ClassVar[str] = ""
    #: ``model.family: auto`` may pick this family; a variant of another family's checkpoints (say, a
    #: fine-tune that answers in another convention) sets False and is chosen by name only
    auto_select: ClassVar[bool] = True

    # ---- checkpoints ------------------------------------------------------------------------------
    def recognises(self, model_type: str) -> bool:
        return model_type in self.model_types

    def model_class(self) -> Any:
        """The transformers ``...ForConditionalGeneration`` class (imported lazily)."""
        raise NotImplementedError

    def processor_class(self) -> Any:
        """An image-only processor class (no video processor, so no torchvision)."""
        raise NotImplementedError

    def load_model(self, path: str, **kwargs: Any) -> Any:
        return self.model_class().from_pretrained(path, **kwargs)

    def load_processor(self, path: str | Path, **kwargs: Any) -> Any:
        """Processor of a checkpoint (hub id or directory), tokenizer padding on the left for batched generation."""
        processor = self.processor_class().from_pretrained(str(path), **kwargs)
        processor.tokenizer.padding_side = "left"
        return processor

    # ---- prompts and tokens -------------------------------------------------------------------------
    #: the most images one prompt may show (``None``: any number).  A family whose processor or model takes one
    #: image sets 1, and ``syngrpo check`` refuses data with more before any model loads
    max_images: ClassVar[int | None] = None

    def render_prompt(self, processor: Any, text: str, num_images: int = 1) -> str:
        """The chat-formatted prompt: ``num_images`` images (one placeholder each, in order), then ``text``,
        ending where the answer starts.  (A family that overrides it with the one-image signature
        ``(processor, text)`` keeps working for one image; several images need ``num_images``.)"""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
        messages = [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def check_image_count(self, num_images: int, where: str = "") -> None:
        """Refuse a prompt of ``num_images`` images this family cannot take (a :class:`ConfigError`)."""
        if self.max_images is not None and num_images > self.max_images:
            raise ConfigError(f"{where or 'a sample'} shows {num_images} images, but model family {self.name!r} "
                              f"takes at most {self.max_images} per prompt; use a family that takes several "
                              "(docs/models.md, 'Several images per sample') or one image per record")

    def suppress_token_ids(self, tokenizer: Any) -> list[int]:
        vocab = tokenizer.get_vocab()
        return [int(vocab[t]) for t in self.suppress_tokens if t in vocab]

    def eos_token_ids(self, tokenizer: Any, generation_config: Any = None) -> list[int]:
        """End-of-turn ids: the family's tokens first, then the checkpoint's own EOS ids."""
        vocab = tokenizer.get_vocab()
        found = [int(vocab[t]) for t in self.eos_tokens if t in vocab]
        extra = getattr(generation_config, "eos_token_id", None)
        for value in (extra, tokenizer.eos_token_id):
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, int) and v >= 0 and v not in found:
                    found.append(v)
        return found

    # ---- images: the processor's output, per prompt ------------------------------------------------------
    #: the keys of :meth:`syngrpo.models.policy.PromptBatch.model_inputs` this family's forward takes
    model_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                                   "mm_token_type_ids")

    def vision_sizes(self, image_processor: Any) -> tuple[int, int]:
        """``(patch_size, merge_size)`` of the image processor: the pixels of one grid cell, cells merged per token."""
        return int(image_processor.patch_size), int(image_processor.merge_size)

    def image_grid(self, encoding: Any, images: Sequence[Any], bundle: Any, image_kwargs: dict[str, Any]) -> Any:
        """The ``(B, 3)`` grid of each prompt's image (``image_kwargs``: what the processor was called with):
        ``image_grid_thw`` for the patch-grid families."""
        return encoding["image_grid_thw"]

    def pixel_rows(self, grid: Any) -> list[int]:
        """How many rows of ``pixel_values`` each image has, given the grid (patch-grid families: t * h * w)."""
        return [int(n) for n in grid.prod(-1).tolist()]

    def image_token_count(self, grid_row: Sequence[int], bundle: Any) -> int:
        """Image placeholder tokens the processor writes for one image of this grid."""
        t, h, w = (int(v) for v in grid_row)
        return t * h * w // (bundle.merge_size * bundle.merge_size)

    def image_kwargs(self, bundle: Any, *, max_pixels: int | None = None, min_pixels: int | None = None,
                     always: bool = False) -> dict[str, Any]:
        """Keyword arguments of the image processor that fix the resolution, for the trainer's processor and
        vLLM's alike (``mm_processor_kwargs``), so that an image is sampled and scored at one resolution.

        Patch-grid families: ``{"size": pixel_budget(...)}`` when a budget is set (or ``always``)."""
        from syngrpo.models.budget import pixel_budget

        if always or any(v is not None for v in (max_pixels, min_pixels, bundle.max_pixels, bundle.min_pixels)):
            return {"size": pixel_budget(bundle, max_pixels=max_pixels, min_pixels=min_pixels)}
        return {}

    def max_image_tokens(self, bundle: Any) -> int | None:
        """Placeholder tokens of the largest image the processor makes (``None``: count the pixel budget's patches)."""
        return None

    # ---- frames ------------------------------------------------------------------------------------
    def input_frame(self, image_width: int, image_height: int, grid_thw: Sequence[int], patch_size: int) -> ImageTransform:
        """Original image -> the model-input image the processor made (``grid`` patches of ``patch_size``)."""
        _, gh, gw = (int(v) for v in grid_thw)
        return ImageTransform.resize(image_width, image_height, gw * patch_size, gh * patch_size)

    def answer_frame(self, input_frame: ImageTransform) -> ImageTransform:
        """Original image -> the frame this family writes boxes in (:attr:`coordinates`)."""
        return self.coordinates.answer_frame(input_frame)

    # ---- engines ------------------------------------------------------------------------------------
    def vllm_request(self, prompt: str, image: Any) -> dict[str, Any]:
        """One vLLM request: the chat-formatted text (one image placeholder per image, vLLM expands each) + the
        image, or the list of images in placeholder order (vLLM's multi-image input; the engine sets
        ``limit_mm_per_prompt`` to the most images a prompt of the run shows)."""
        if isinstance(image, (list, tuple)):
            image = list(image) if len(image) > 1 else image[0]
        return {"prompt": prompt, "multi_modal_data": {"image": image}}

    # ---- tiny models --------------------------------------------------------------------------------
    def build_tiny(self, out_dir: str | Path, *, seed: int = 0, **options: Any) -> Path:
        """Write a tiny random model of this family (weights, processor, locally trained tokenizer) to ``out_dir``."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: {', '.join(self.model_types)}; boxes in {self.coordinates.describe()}"


# ---- lookup -------------------------------------------------------------------------------------------


def _registry(registry: Any | None) -> Any:
    if registry is not None:
        return registry
    from syngrpo.plugins import get_registry

    return get_registry()


def get_family(name: str, registry: Any | None = None) -> ModelFamily:
    """The family registered under ``name`` (an unknown name lists the installed ones)."""
    family = _registry(registry).create("model_families", name)
    if not isinstance(family, ModelFamily):
        raise ConfigError(f"model family {name!r} is a {type(family).__name__}, not a syngrpo ModelFamily")
    return family


def family_for_model_type(model_type: str, registry: Any | None = None) -> ModelFamily:
    """The installed family that recognises checkpoints of ``model_type``."""
    reg = _registry(registry)
    names = reg.names("model_families")
    found = [f for f in (get_family(n, reg) for n in names) if f.auto_select and f.recognises(model_type)]
    if len(found) > 1:
        raise ConfigError(f"several model families read {model_type!r} checkpoints: "
                          f"{', '.join(f.name for f in found)}; set model.family to one of them")
    if found:
        return found[0]
    known = ", ".join(f"{n} ({', '.join(get_family(n, reg).model_types)})" for n in names) or "none"
    raise ConfigError(f"no installed model family reads {model_type!r} checkpoints; installed families: {known}. "
                      "A plugin can add one (docs/hooks/model_families.md).")


def resolve_family(family: str | ModelFamily, model_type: str | None = None, *,
                   registry: Any | None = None, source: str = "") -> ModelFamily:
    """``family`` as a :class:`ModelFamily`: ``auto`` picks it from ``model_type``; a name must match it."""
    if isinstance(family, ModelFamily):
        chosen = family
    elif family == AUTO:
        if not model_type:
            raise ConfigError(f"cannot pick a model family for {source or 'this checkpoint'}: its config has no "
                              "model_type; set model.family")
        return family_for_model_type(model_type, registry)
    else:
        chosen = get_family(family, registry)
    if model_type and not chosen.recognises(model_type):
        raise ConfigError(f"{source or 'the checkpoint'} is a {model_type!r} model, but model.family is "
                          f"{chosen.name!r} (which reads {', '.join(chosen.model_types)}); use model.family: auto")
    return chosen


def family_of(model: Any, registry: Any | None = None) -> ModelFamily | None:
    """The family of a loaded transformers model (by its config's ``model_type``); ``None`` if none reads it."""
    from syngrpo.models.modules import unwrap_model

    model_type = getattr(getattr(unwrap_model(model), "config", None), "model_type", None)
    if not model_type:
        return None
    try:
        return family_for_model_type(model_type, registry)
    except ConfigError:
        return None
