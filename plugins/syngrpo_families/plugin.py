"""Entry-point module of the built-in model families; imports nothing heavy (each family imports
transformers only when it loads or builds a model)."""

from __future__ import annotations

import importlib

from syngrpo.hookspecs import hookimpl

#: name -> (module, class, description)
FAMILIES = {
    "qwen2_vl": ("syngrpo_families.qwen2_vl", "Qwen2VLFamily",
                 "Qwen2-VL; boxes 0-1000 relative to the image"),
    "qwen2_5_vl": ("syngrpo_families.qwen2_5_vl", "Qwen25VLFamily",
                   "Qwen2.5-VL; boxes in absolute pixels of the resized image"),
    "qwen3_vl": ("syngrpo_families.qwen3_vl", "Qwen3VLFamily",
                 "Qwen3-VL; boxes 0-1000 relative to the image"),
    "glm4v": ("syngrpo_families.glm4v", "Glm4vFamily",
              "GLM-4.1V-Thinking (zai-org); boxes 0-1000 relative to the image"),
    "internvl": ("syngrpo_families.internvl", "InternVLFamily",
                 "InternVL3 / 3.5 (-hf checkpoints); boxes 0-1000 relative to the image"),
}


def _factory(module: str, cls_name: str):
    def factory():
        return getattr(importlib.import_module(module), cls_name)()

    factory.__name__ = f"make_{cls_name}"
    return factory


@hookimpl
def register_model_families(register):
    for name, (module, cls_name, description) in FAMILIES.items():
        register(name, _factory(module, cls_name), description=description)
