"""Data-parallel training over several processes (``torchrun``), and the single-process case alike.

Under ``torchrun --nproc_per_node=N syngrpo train ...`` each rank:

* draws the same global batch from its (identical) data pool and takes its own slice of prompts;
* rolls out and scores its prompts; gradients are averaged by ``DistributedDataParallel``;
* shares its groups' diversities V(q), so diversity smoothing sees the whole global batch;
* sends its chosen descriptions to rank 0, which alone talks to the data server and broadcasts
  the synthesized samples that came back, so every rank's pool stays the same;
* leaves logging, evaluation and checkpoints to rank 0.

With one process every method here is the identity, so the trainer's step reads the same.

The **strategy** (``parallel.strategy``) is the one seam where ranks differ in how they hold
the policy: ``ddp`` replicates it (``DistributedDataParallel``), ``fsdp`` shards parameters,
gradients and AdamW state with FSDP2's ``fully_shard`` (one unit per decoder layer and vision
block, then the root).  :meth:`Parallel.wrap`, :meth:`Parallel.grad_sync`,
:meth:`Parallel.full_weights`, :meth:`Parallel.full_model_state` and
:meth:`Parallel.load_optimizer_state` hide the difference from the trainer.

Nothing here assumes a shared disk: whatever only rank 0 has (the SFT warm start, a
checkpoint) reaches the other ranks by :meth:`Parallel.broadcast_weights` and
:meth:`Parallel.broadcast`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass
class Parallel:
    """Rank, world size, and the few collectives the trainer needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    #: ``single`` (one process, nothing wrapped), ``ddp`` or ``fsdp``
    strategy: str = "single"
    reshard_after_forward: bool = True

    @classmethod
    def from_env(cls, strategy: str = "auto", *, reshard_after_forward: bool = True,
                 timeout: float = 1800.0) -> Parallel:
        """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or stay single.

        ``fsdp`` in a single process (no torchrun) starts a one-rank process group itself,
        so the sharded code path runs on one GPU exactly as on many.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 and strategy != "fsdp":
            return cls()
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        owns = False
        if not dist.is_initialized():
            if world <= 1 and "MASTER_ADDR" not in os.environ:
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                        timeout=timedelta(seconds=timeout))
            else:
                dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
            owns = True
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        out = cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns)
        out.use_strategy(strategy, reshard_after_forward=reshard_after_forward)
        return out

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def use_strategy(self, strategy: str, *, reshard_after_forward: bool = True) -> None:
        """Set the strategy of a joined group (``auto`` = ``ddp`` with several ranks)."""
        self.strategy = "fsdp" if strategy == "fsdp" else ("ddp" if self.world > 1 else "single")
        self.reshard_after_forward = reshard_after_forward

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
        """Numbers averaged over ranks (equal shares of the batch); keys starting with ``main_only`` from rank 0;
        maxima and memory peaks (``*max_length``, ``*max_abs_diff``, ``*_peak_gib``) the worst rank's."""
        if not self.enabled:
            return metrics
        every = self.gather(metrics)
        out: dict[str, Any] = {}
        for key, value in every[0].items():
            values = [m.get(key) for m in every]
            if key.startswith(main_only) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in values):
                out[key] = value
            elif key.endswith(("max_length", "max_abs_diff", "_peak_gib")):  # the worst rank is the one that OOMs
                out[key] = max(values)
            else:
                out[key] = sum(values) / len(values)
        return out

    # ---- how the policy is held: the strategy seam ------------------------------------------
    def wrap(self, model: Any, precision: Any) -> Any:
        """The module the training forward runs: the policy itself, wrapped in DDP, or sharded in place."""
        if self.sharded:
            return shard(model, mp_policy=precision.fsdp_policy(), reshard_after_forward=self.reshard_after_forward)
        if self.strategy == "ddp":
            import torch
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = next(model.parameters()).device.type == "cuda"
            return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None)
        return model

    def wrap_reference(self, model: Any) -> Any:
        """The frozen reference model, sharded like the policy under FSDP (it is as large)."""
        if self.sharded:
            return shard(model, mp_policy=None, reshard_after_forward=self.reshard_after_forward)
        return model

    def grad_sync(self, model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradient accumulation: reduce gradients over ranks only when ``sync`` (the last micro-batch)."""
        if self.sharded:
            model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        if self.strategy == "ddp" and not sync:
            return model.no_sync()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def full_weights(self, model: Any) -> Iterator[None]:
        """Every rank holds the whole (compute-dtype) policy inside: for ``generate`` and evaluation.

        FSDP shards cannot feed ``generate`` (transformers encodes the image before the first
        forward, outside FSDP's hooks; REFERENCE.md), so the units are gathered once, generation
        runs with no per-token collectives (ranks may stop at different lengths), then the
        shards are freed.  A collective: every rank enters.
        """
        if not self.sharded:
            yield
            return
        units = fsdp_units(model)
        # generate runs the vision blocks before any root forward; without this the first block to run
        # would make itself FSDP's root (torch 2.13 has no public call for it; a root forward does the same)
        model._get_fsdp_state()._lazy_init()
        model.set_reshard_after_forward(False)
        for unit in units:
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
            model.set_reshard_after_forward(self.reshard_after_forward)

    def full_model_state(self, model: Any) -> dict[str, Any] | None:
        """Under FSDP, the full state dict gathered on rank 0 (CPU; empty elsewhere); else ``None``.

        ``None`` tells the caller to save the module as it is (it already holds full weights).
        """
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def optimizer_state(self, model: Any, optimizer: Any) -> dict[str, Any]:
        """The optimizer's full state keyed by parameter name (gathered on rank 0 under FSDP).

        Names, not positions, so a checkpoint resumes under any strategy.
        """
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(model, optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return optimizer_state_by_name(model, optimizer)

    def load_optimizer_state(self, model: Any, optimizer: Any, state: dict[str, Any] | None) -> None:
        """Restore :meth:`optimizer_state` (``state`` needed on rank 0 only; broadcast from there)."""
        if self.world == 1 and not self.sharded:
            load_optimizer_state_by_name(model, optimizer, state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        full = _names_for_positions(model, optimizer, state) if self.is_main and state is not None else {}
        set_optimizer_state_dict(model, optimizer, full,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))

    def broadcast_weights(self, model: Any) -> None:
        """Rank 0's weights (parameters and buffers) into every rank's unwrapped ``model``, tensor by tensor."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


# ---- FSDP2 helpers ------------------------------------------------------------------------------


def shard(model: Any, *, mp_policy: Any | None, reshard_after_forward: bool = True) -> Any:
    """``fully_shard`` every block the model says must not be split (decoder layers, vision blocks), then the root.

    The blocks are the model's ``_no_split_modules`` (transformers names them for every family),
    so one FSDP unit is one transformer block: its weights are gathered just before it runs.
    """
    from torch.distributed.fsdp import fully_shard

    from syngrpo.models.policy import unwrap_model

    base = unwrap_model(model)
    names = set(getattr(base, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(base).__name__} names no blocks (_no_split_modules) to shard")
    kwargs: dict[str, Any] = {"reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def fsdp_units(model: Any) -> list[Any]:
    """The FSDP units of a sharded model, the root last."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule) and m is not model]
    return [*units, model]


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


def optimizer_state_by_name(model: Any, optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()`` with parameter names in place of positions (the FSDP full-state format)."""
    return _names_for_positions(model, optimizer, optimizer.state_dict())


def _names_for_positions(model: Any, optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A state keyed by position (checkpoints of older syngrpo versions) keyed by parameter name instead."""
    groups = state.get("param_groups") or []
    if not any(isinstance(i, int) for g in groups for i in g["params"]):
        return state
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {
        "state": {order[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def load_optimizer_state_by_name(model: Any, optimizer: Any, state: dict[str, Any] | None) -> None:
    """The inverse of :func:`optimizer_state_by_name` (a state keyed by position loads as it is)."""
    if state is None:
        return
    if any(isinstance(i, int) for g in state.get("param_groups") or [] for i in g["params"]):
        optimizer.load_state_dict(state)  # keyed by position (older checkpoints)
        return
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    index = {n: i for i, n in enumerate(order)}
    optimizer.load_state_dict({
        "state": {index[n]: v for n, v in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    })
