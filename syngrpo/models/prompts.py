"""A loaded policy and its prompts: :class:`PolicyBundle`, :class:`PromptBatch`, :func:`encode_prompts`.

Its own module because everything after loading reads only this: rollout engines, scoring, the
trainer's step, evaluation and describers take a bundle and turn (image, text) pairs into model
inputs; how a bundle is loaded (families, dtype, meta-device building, LoRA, the reference model)
is :mod:`syngrpo.models.policy`, which re-exports every name here (``from syngrpo.models.policy
import PolicyBundle, encode_prompts`` stays the documented import).  What differs between VLM
families (chat prompt, coordinate convention) is asked of the bundle's
:class:`~syngrpo.models.family.ModelFamily`.

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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from syngrpo.models.budget import pixel_budget  # noqa: F401 (re-exported: its old home)
from syngrpo.models.family import family_for_model_type
from syngrpo.models.modules import unwrap_model
from syngrpo.perception.geometry import ImageTransform


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
    """Processor outputs for a batch of prompts, plus the image frames.

    Rows are prompts.  After :meth:`expand` each prompt appears ``group_size``
    times in a row (p0 x G, p1 x G, ...), the order ``generate`` returns.

    A prompt may show several images (``image_counts``): ``image_grid_thw`` and
    ``pixel_values`` then hold every image of every row, row by row and in prompt
    order, while the per-row lists (``frames``, ``input_frames``, ``images``) are
    those of each row's *box image*, the one its answer's boxes are in
    (:attr:`syngrpo.types.Sample.box_image`); ``image_lists`` holds all of a row's images.
    """

    input_ids: torch.Tensor  # (B, P) left-padded
    attention_mask: torch.Tensor  # (B, P)
    pixel_values: torch.Tensor  # (sum of patches, C * temporal * patch * patch)
    image_grid_thw: torch.Tensor  # (number of images, 3): row by row, each row's images in prompt order
    mm_token_type_ids: torch.Tensor  # (B, P) 0 text, 1 image
    #: per row: original image -> the frame the model writes boxes in (the processor's resize composed with
    #: the family's coordinate convention); tasks map answers back with ``frame.inverse()``
    frames: list[ImageTransform]
    #: how many consecutive rows share one prompt (1 = not expanded)
    group_size: int = 1
    #: the rendered prompt text of each row (chat template applied), for logs and engines that tokenize
    prompts: list[str] = field(default_factory=list)
    #: the original (RGB) box image of each row, for engines that process images themselves (vLLM)
    images: list[Any] = field(default_factory=list)
    #: per row: original image -> model-input pixels (width = grid_w * patch); equals ``frames`` for
    #: families that answer in pixels (dense vision targets use it)
    input_frames: list[ImageTransform] = field(default_factory=list)
    #: the policy's :class:`~syngrpo.models.family.ModelFamily` (scoring asks it how to run the forward)
    family: Any = None
    #: images of each row (empty: one each, the common case); rows of ``image_grid_thw`` follow these counts
    image_counts: list[int] = field(default_factory=list)
    #: every original (RGB) image of each row in prompt order, where a row shows several (else empty:
    #: ``images`` is all); :meth:`row_images` reads either
    image_lists: list[list[Any]] = field(default_factory=list)

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

    def counts(self) -> list[int]:
        """Images of each row (1 each unless ``image_counts`` says otherwise)."""
        return list(self.image_counts) if self.image_counts else [1] * self.num_rows

    @property
    def max_images(self) -> int:
        """The most images one row shows."""
        return max(self.counts(), default=1)

    def row_images(self, row: int) -> list[Any]:
        """Every original image of ``row``, in prompt order."""
        return list(self.image_lists[row]) if self.image_lists else [self.images[row]]

    def patches_per_image(self) -> list[int]:
        """Rows of ``pixel_values`` of each image (its family says how the grid counts them)."""
        if self.family is not None:
            return self.family.pixel_rows(self.image_grid_thw)
        return [int(n) for n in self.image_grid_thw.prod(-1).tolist()]

    def patches_per_row(self) -> list[int]:
        """Rows of ``pixel_values`` of each row's images together."""
        per_image, out, i = self.patches_per_image(), [], 0
        for n in self.counts():
            out.append(sum(per_image[i : i + n]))
            i += n
        return out

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of the model's forward / ``generate``: the family's ``model_input_keys`` (the
        patch-grid families: ``mm_token_type_ids`` always included)."""
        inputs = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        keys = getattr(self.family, "model_input_keys", None)
        return inputs if keys is None else {k: v for k, v in inputs.items() if k in keys}

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
        n_images = self.counts()
        first = [0]
        for n in n_images:
            first.append(first[-1] + n)
        grid_idx = torch.tensor([i for r in rows for i in range(first[r], first[r + 1])], dtype=torch.long,
                                device=self.image_grid_thw.device)
        return PromptBatch(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            pixel_values=torch.cat(pixel_chunks, 0) if pixel_chunks else self.pixel_values[:0],
            image_grid_thw=self.image_grid_thw[grid_idx],
            mm_token_type_ids=self.mm_token_type_ids[idx],
            frames=[self.frames[r] for r in rows],
            group_size=group_size or 1,
            prompts=[self.prompts[r] for r in rows] if self.prompts else [],
            images=[self.images[r] for r in rows] if self.images else [],
            input_frames=[self.input_frames[r] for r in rows] if self.input_frames else [],
            family=self.family,
            image_counts=[n_images[r] for r in rows] if self.image_counts else [],
            image_lists=[self.image_lists[r] for r in rows] if self.image_lists else [],
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


def render_prompt(bundle: PolicyBundle, text: str, num_images: int = 1) -> str:
    """The chat-formatted prompt for ``num_images`` images followed by ``text``, ending where the answer starts."""
    family = _family(bundle)
    if num_images == 1:  # the one-image call a family written before several images overrides
        return family.render_prompt(bundle.processor, text)
    family.check_image_count(num_images)
    return family.render_prompt(bundle.processor, text, num_images=num_images)


def _family(bundle: PolicyBundle) -> Any:
    """The bundle's model family (a bundle built by hand is looked up by its model type)."""
    if bundle.family is None:
        bundle.family = family_for_model_type(bundle.model_type)
    return bundle.family


def encode_prompts(
    bundle: PolicyBundle,
    images: Sequence[Any],
    texts: Sequence[str],
    *,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    box_images: Sequence[int] | None = None,
) -> PromptBatch:
    """Tokenize prompts (left padded) and record the frames of each prompt's box image.

    ``images[i]`` is prompt ``i``'s image, or the list of its images in prompt order
    (one placeholder each, before the text); ``box_images[i]`` (default 0) is the index
    of the one its answer's boxes are in.  ``frames[i]`` maps that image to the frame
    the family answers in; ``input_frames[i]`` to the model-input pixels (the processor's resize).

    Images are PIL images (any mode; converted to RGB).  ``max_pixels`` /
    ``min_pixels`` override the processor's pixel budget (default: the bundle's,
    then the processor's), per image.
    """
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images for {len(texts)} texts; one image (or list of images) per prompt")
    if not texts:
        raise ValueError("encode_prompts needs at least one prompt")
    per_row = [list(im) if isinstance(im, (list, tuple)) else [im] for im in images]
    counts = [len(row) for row in per_row]
    if min(counts) < 1:
        raise ValueError("a prompt's list of images is empty")
    boxes = [0] * len(per_row) if box_images is None else [int(b) for b in box_images]
    if len(boxes) != len(per_row) or any(not 0 <= b < n for b, n in zip(boxes, counts, strict=True)):
        raise ValueError(f"box_images {list(boxes)} do not index the prompts' images (counts {counts})")
    processor = bundle.processor
    prompts = [render_prompt(bundle, t, n) for t, n in zip(texts, counts, strict=True)]
    rgb_rows = [[im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in row] for row in per_row]
    rgb = [im for row in rgb_rows for im in row]  # every image, row by row: the order of the placeholders
    family = _family(bundle)
    kwargs = family.image_kwargs(bundle, max_pixels=max_pixels, min_pixels=min_pixels)
    enc = processor(text=prompts, images=rgb, padding=True, padding_side="left", return_tensors="pt", **kwargs)
    grid = family.image_grid(enc, rgb, bundle, kwargs)
    if int(grid.shape[0]) != len(rgb):
        raise RuntimeError(f"model family {family.name!r} reported {int(grid.shape[0])} image grids for {len(rgb)} "
                           "images; its image_grid must give one row per image")
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    box_rgb = [rgb[f + b] for f, b in zip(firsts, boxes, strict=True)]
    box_grid = grid[[f + b for f, b in zip(firsts, boxes, strict=True)]]
    input_frames = [family.input_frame(im.width, im.height, g, bundle.patch_size)
                    for im, g in zip(box_rgb, box_grid.tolist(), strict=True)]
    frames = [family.answer_frame(f) for f in input_frames]
    several = max(counts) > 1
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
        images=box_rgb,
        input_frames=input_frames,
        family=family,
        image_counts=counts if several else [],
        image_lists=rgb_rows if several else [],
    )
    return batch.to(bundle.device, dtype=bundle.dtype)
