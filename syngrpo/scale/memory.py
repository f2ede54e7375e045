"""Memory measured while a run goes: the per-phase CUDA peaks and the bytes of the training state that
``syngrpo plan``'s figures are held against."""

from __future__ import annotations

from typing import Any


class PhasePeaks:
    """Peak CUDA memory of each phase of a step (``memory/<phase>_peak_gib``); nothing on other devices.

    ``syngrpo plan`` predicts the two phases apart (sampling and the update never overlap); these are the
    measurements to hold it against, per step, in metrics.jsonl. It resets the device's peak counter at each
    phase's start, so ``torch.cuda.max_memory_allocated`` read elsewhere covers only the time since.
    """

    def __init__(self, device: str | Any) -> None:
        import torch

        self.device = torch.device(device)
        self.on = self.device.type == "cuda" and torch.cuda.is_available()
        self.metrics: dict[str, float] = {}
        if self.on:
            torch.cuda.reset_peak_memory_stats(self.device)

    def end(self, phase: str) -> None:
        if not self.on:
            return
        import torch

        self.metrics[f"memory/{phase}_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        torch.cuda.reset_peak_memory_stats(self.device)


def state_bytes(model: Any, optimizer: Any) -> dict[str, int]:
    """Bytes of this rank's parameters, gradients and optimizer state, counted from the tensors.

    Under FSDP only the local shards count (a DTensor's ``to_local()``); compare with
    ``syngrpo plan``: fp32 masters 4 B/param, fp32 gradients 4 B/param, AdamW 8 B/param.
    """
    import torch

    def nbytes(t: Any) -> int:
        if t is None or not isinstance(t, torch.Tensor):
            return 0
        local = t.to_local() if hasattr(t, "to_local") else t
        return local.numel() * local.element_size()

    params = list(model.parameters())
    return {
        "params": sum(nbytes(p) for p in params),
        "grads": sum(nbytes(p.grad) for p in params),
        "optimizer": sum(nbytes(v) for st in optimizer.state.values() for v in st.values()),
    }
