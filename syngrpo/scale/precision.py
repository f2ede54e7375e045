"""Mixed precision as the field does it: float32 master weights, bf16 (or fp16) compute.

``model.dtype: bfloat16`` does *not* put the weights in bfloat16.  AdamW on bf16
weights rounds away every update smaller than half a bf16 ulp (2^-8 relative): at
the paper's lr 1e-6 almost all of them (REFERENCE.md: 1.2 % of decoder weights moved
in 3 steps).  So a run keeps

* the **master weights and the AdamW state in float32** (what the optimizer updates,
  what checkpoints hold, so a resume loses nothing);
* **forward and backward in the compute dtype**: ``torch.autocast`` in one process
  and under DDP; under FSDP2 its ``MixedPrecisionPolicy`` (parameters gathered in
  bf16, gradients reduced in float32) does the cast, so no autocast is needed;
* the **reference model** of the KL term directly in the compute dtype (it is never
  updated, so nothing is lost);
* **rollouts** (the ``hf`` engine) under the same autocast as the training forward:
  the sampler then computes the very distribution the loss scores (docs/training.md
  has the measurement).

``float32`` is pure float32 (no autocast).  ``float16`` adds a gradient scaler (fp16
gradients underflow without one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from syngrpo.scale.dtype import compute_dtype

#: the torch dtype of each name :func:`compute_dtype` answers
_TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Precision:
    """The dtypes of one run and the few operations that depend on them."""

    #: what forward and backward compute in (float32 = no mixed precision)
    compute: torch.dtype = torch.float32
    #: ``cpu`` or ``cuda``: the device type autocast applies to
    device_type: str = "cpu"
    #: true under FSDP2: its MixedPrecisionPolicy casts, autocast stays off
    sharded: bool = False
    _scaler: Any = field(default=None, repr=False)

    @classmethod
    def for_model(cls, dtype: str | torch.dtype, device: str | torch.device, *, sharded: bool = False) -> Precision:
        """The precision ``model.dtype`` names on ``device`` (:func:`syngrpo.scale.dtype.compute_dtype`).

        Training, ``syngrpo sft``, ``syngrpo eval`` and ``syngrpo export`` all build their dtypes here.
        """
        # models.policy loads transformers: imported when a precision is built, not when this module is
        from syngrpo.models.policy import resolve_device

        dev = resolve_device(device)
        if isinstance(dtype, torch.dtype):
            compute = dtype
        else:  # bf16 support is asked of the GPU only where `auto` depends on it
            bf16 = dtype != "auto" or dev.type != "cuda" or torch.cuda.is_bf16_supported()
            compute = _TORCH[compute_dtype(dtype, dev.type, bf16_supported=bf16)]
        out = cls(compute=compute, device_type=dev.type, sharded=sharded)
        if out.compute == torch.float16:
            out._scaler = torch.amp.GradScaler(dev.type)
        return out

    @property
    def mixed(self) -> bool:
        return self.compute != torch.float32

    @property
    def master(self) -> torch.dtype:
        """The dtype of the weights the optimizer updates (and checkpoints hold): always float32."""
        return torch.float32

    def load_dtype(self, *, lora: bool = False, trains: bool = True) -> torch.dtype:
        """The dtype to load the policy in: float32 masters; with LoRA the frozen base in the compute dtype.

        LoRA trains the adapters only; :meth:`upcast_trainable` makes them the float32 masters.
        ``trains=False`` (evaluating a checkpoint, exporting a serving copy): the compute dtype, since
        nothing is updated and no master copy is needed.
        """
        return self.compute if lora or not trains else self.master

    def upcast_trainable(self, model: Any) -> None:
        """Every parameter the optimizer will update in float32 (LoRA adapters on a bf16 base)."""
        for param in model.parameters():
            if param.requires_grad and param.dtype != self.master:
                param.data = param.data.to(self.master)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Forward passes in the compute dtype (a no-op in float32 and under FSDP's own policy)."""
        if not self.mixed or self.sharded:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute)

    def fsdp_policy(self) -> Any | None:
        """FSDP2's mixed-precision policy: gather parameters in the compute dtype, reduce gradients in float32."""
        if not self.mixed:
            return None
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=self.compute, reduce_dtype=torch.float32)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under float16."""
        (self._scaler.scale(loss) if self._scaler is not None else loss).backward()

    def clip_and_step(self, optimizer: Any, params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
        """Clip the gradients' global norm (``None`` = measure only), step; returns the norm before clipping."""
        params = list(params)
        if self._scaler is not None:
            self._scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf") if max_norm is None else max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            norm = norm.full_tensor()
        if self._scaler is not None:
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            optimizer.step()
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self._scaler.state_dict()} if self._scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._scaler is not None and state.get("scaler"):
            self._scaler.load_state_dict(state["scaler"])

