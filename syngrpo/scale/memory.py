"""Memory measured while a run goes: the per-phase CUDA peaks that ``syngrpo plan``'s figures are held against."""

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
