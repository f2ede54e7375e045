"""What ``model.dtype`` means: the one reading of it, for training, evaluation, export and the memory plan.

``model.dtype`` names the **compute dtype**: what forward and backward run in.  It never names the dtype of
the weights the optimizer updates, which are float32 masters in every run (:mod:`syngrpo.scale.precision`
says why).  ``auto`` is bfloat16 on a CUDA GPU that has it (float16 on one that has not) and float32
anywhere else.  Loading for training, evaluating a checkpoint, exporting a serving copy and planning memory
all ask :func:`compute_dtype`; :meth:`syngrpo.scale.precision.Precision.for_model` turns the answer into
torch dtypes and the few operations that depend on them.

This module imports nothing heavy: ``syngrpo plan`` reads it without torch.
"""

from __future__ import annotations

from typing import Literal

from syngrpo.errors import ConfigError

DtypeName = Literal["float32", "bfloat16", "float16"]
#: the dtypes a config may name besides ``auto``
DTYPES: tuple[DtypeName, ...] = ("float32", "bfloat16", "float16")


def compute_dtype(dtype: str, device_type: str, *, bf16_supported: bool = True) -> DtypeName:
    """The dtype ``model.dtype`` computes in on a device of type ``device_type`` (``cpu``, ``cuda`` ...).

    ``bf16_supported`` is whether that CUDA device has bfloat16 (the plan assumes a GPU that has it;
    :class:`~syngrpo.scale.precision.Precision` asks the device).
    """
    if dtype == "auto":
        if device_type == "cuda":
            return "bfloat16" if bf16_supported else "float16"
        return "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}")
    return dtype  # type: ignore[return-value]
