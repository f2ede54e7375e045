"""Data-parallel training over several processes (``torchrun``), and the single-process case alike.

Under ``torchrun --nproc_per_node=N syngrpo train ...`` each rank:

* draws the same global batch from its (identical) data pool and takes its own slice of prompts;
* rolls out and scores its prompts; gradients are averaged by ``DistributedDataParallel``;
* shares its groups' diversities V(q), so diversity smoothing sees the whole global batch;
* sends its chosen descriptions to rank 0, which alone talks to the data server and broadcasts
  the synthesized samples that came back, so every rank's pool stays the same;
* leaves logging, evaluation and checkpoints to rank 0.

With one process every method here is the identity, so the trainer's step reads the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Parallel:
    """Rank, world size, and the few collectives the trainer needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> Parallel:
        """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or stay single."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        owns = False
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            owns = True
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, configured: str) -> str:
        """Each rank on its own GPU when the config says ``auto`` or ``cuda``."""
        if self.enabled and configured in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                return f"cuda:{self.local_rank}"
        return configured

    def my_slice(self, items: list[Any]) -> list[Any]:
        """This rank's contiguous share of a global batch (sizes must divide evenly)."""
        if not self.enabled:
            return items
        if len(items) % self.world:
            raise ValueError(f"a global batch of {len(items)} does not split over {self.world} ranks")
        k = len(items) // self.world
        return items[self.rank * k : (self.rank + 1) * k]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean_metrics(self, metrics: dict[str, Any], *, main_only: tuple[str, ...] = ()) -> dict[str, Any]:
        """Numbers averaged over ranks (equal shares of the batch); keys starting with ``main_only`` from rank 0."""
        if not self.enabled:
            return metrics
        every = self.gather(metrics)
        out: dict[str, Any] = {}
        for key, value in every[0].items():
            values = [m.get(key) for m in every]
            if key.startswith(main_only) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in values):
                out[key] = value
            elif key.endswith(("max_length", "max_abs_diff")):
                out[key] = max(values)
            else:
                out[key] = sum(values) / len(values)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled and self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False
