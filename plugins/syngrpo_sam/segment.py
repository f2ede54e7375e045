"""The ``sam`` segmenter: Segment Anything prompted with the labelled boxes.

Two back ends:

``transformers`` (default)
    ``SamModel`` + ``SamProcessor`` by hub id or local path (``facebook/sam-vit-base``, or the
    tiny model from :func:`syngrpo_sam.tiny.build_tiny_sam`).  Needs no torchvision: the
    processor falls back to ``SamImageProcessorPil``.
``segment_anything``
    Meta's original package (``SamPredictor``) with a checkpoint file and ``model_type``
    (``vit_b``/``vit_l``/``vit_h``), or a ready ``sam_model`` object.  That package imports
    torchvision at import time; where torchvision is missing this back end says so.

Every box of an image is one prompt; the image's mask is the union of the box masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from syngrpo.errors import MissingExtraError, require


class SamSegmenter:
    """Foreground masks from SAM box prompts (see the module doc for the back ends)."""

    def __init__(
        self,
        *,
        model: str = "facebook/sam-vit-base",
        backend: str = "transformers",
        checkpoint: str | None = None,
        model_type: str = "vit_b",
        sam_model: Any = None,
        device: str = "cpu",
        multimask: bool = False,
        local_files_only: bool = False,
    ) -> None:
        self.backend = backend
        self.device = device
        self.multimask = multimask
        if backend == "transformers":
            transformers = require("transformers", extra="sam", what="the sam segmenter")
            self.processor = transformers.SamProcessor.from_pretrained(model, local_files_only=local_files_only)
            self.model = transformers.SamModel.from_pretrained(model, local_files_only=local_files_only)
            self.model.to(device).eval()
        elif backend == "segment_anything":
            sa = import_segment_anything()
            if sam_model is None:
                if checkpoint is None:
                    raise ValueError("the segment_anything back end needs checkpoint: a SAM .pth file")
                sam_model = sa.sam_model_registry[model_type](checkpoint=checkpoint)
            sam_model.to(device).eval()
            self.predictor = sa.SamPredictor(sam_model)
        else:
            raise ValueError(f"unknown sam backend {backend!r}; use transformers or segment_anything")

    def segment(self, images: list[Image.Image], boxes: list[list[Sequence[float]]]) -> list[Image.Image]:
        import torch

        out = []
        with torch.inference_mode():
            for image, image_boxes in zip(images, boxes, strict=True):
                rgb = image.convert("RGB")
                if not image_boxes:
                    out.append(Image.new("L", rgb.size, 0))
                    continue
                if self.backend == "transformers":
                    masks = self._transformers_masks(rgb, image_boxes)
                else:
                    masks = self._segment_anything_masks(rgb, image_boxes)
                union = np.any(masks, axis=0)
                out.append(Image.fromarray(np.where(union, 255, 0).astype(np.uint8), mode="L"))
        return out

    def _transformers_masks(self, image: Image.Image, boxes: list[Sequence[float]]) -> np.ndarray:
        """(n_boxes, H, W) booleans."""
        inputs = self.processor(images=[image], input_boxes=[[list(map(float, b)) for b in boxes]],
                                return_tensors="pt")
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        outputs = self.model(**inputs, multimask_output=self.multimask)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0]
        # masks: (n_boxes, n_masks, H, W); with several candidates take the best-scored one per box
        if masks.shape[1] > 1:
            best = outputs.iou_scores[0].argmax(-1).cpu()
            masks = masks[torch_arange(masks.shape[0]), best][:, None]
        return masks[:, 0].numpy().astype(bool)

    def _segment_anything_masks(self, image: Image.Image, boxes: list[Sequence[float]]) -> np.ndarray:
        self.predictor.set_image(np.asarray(image))
        found = []
        for box in boxes:
            masks, scores, _ = self.predictor.predict(box=np.asarray(box, dtype=np.float32),
                                                      multimask_output=self.multimask)
            found.append(masks[int(np.argmax(scores))])
        return np.stack(found).astype(bool)


def import_segment_anything() -> Any:
    """Meta's package, or a :class:`MissingExtraError` that says whether it or torchvision is missing."""
    import importlib

    what = "the sam segmenter (segment_anything back end)"
    try:
        return importlib.import_module("segment_anything")
    except ImportError as exc:
        if exc.name == "segment_anything":
            raise MissingExtraError(what, "segment_anything", "sam") from exc
        raise MissingExtraError(
            what, exc.name or "torchvision", "sam",
            hint=f"segment_anything is installed but failed to import ({exc}); it needs a torchvision built for "
                 "this torch. Or use backend: transformers, which needs no torchvision") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a torchvision built for another torch raises RuntimeError
        raise MissingExtraError(what, "torchvision", "sam",
                                hint=f"segment_anything failed to import: {type(exc).__name__}: {exc}") from exc


def torch_arange(n: int) -> Any:
    import torch

    return torch.arange(n)
