"""Load the processor of a policy checkpoint through its model family.

Stock VLM processors insist on a video processor, and video processors need
torchvision, whose PyPI wheels are CUDA builds that fail to import next to a
CPU torch.  syngrpo never feeds videos, so each model family plugin ships an
image-only processor subclass (image processor + tokenizer + chat template,
the PIL image-processor backend when torchvision is absent) and loads it with
:meth:`syngrpo.models.family.ModelFamily.load_processor`.  ``AutoProcessor``
cannot reload such a save (on a tiny-policy directory it returns the bare
tokenizer), hence this function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_processor(name_or_path: str | Path, *, family: Any = "auto", **kwargs: Any) -> Any:
    """The image-only processor of a checkpoint (hub id or directory); the tokenizer pads on the left."""
    from transformers import AutoConfig

    from syngrpo.models.family import resolve_family

    model_type = getattr(AutoConfig.from_pretrained(str(name_or_path)), "model_type", "")
    return resolve_family(family, model_type, source=repr(str(name_or_path))).load_processor(name_or_path, **kwargs)
