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
:meth:`Parallel.load_optimizer_state` hide the difference from the trainer.  FSDP's own calls
are in :mod:`syngrpo.scale.fsdp`, the optimizer state keyed by parameter name (what every strategy
writes) in :mod:`syngrpo.scale.optimizer_state`.

Nothing here assumes a shared disk: whatever only rank 0 has (the SFT warm start, a
checkpoint) reaches the other ranks by :meth:`Parallel.broadcast_weights` and
:meth:`Parallel.broadcast`.  Under FSDP, :meth:`Parallel.shard_from_main` sends rank 0's
weights straight into the other ranks' shards (they build the model on the meta device), and
:meth:`Parallel.shared_path` tells whether the ranks see one filesystem, where each can write
(and read) its own shards of a checkpoint.

Work only rank 0 does (the SFT warm start, evaluation, logging, writing a checkpoint, starting
the data server) can take longer than ``parallel.timeout``, the limit of an ordinary collective.
The other ranks then wait in :meth:`Parallel.wait_for_main`: a barrier of a gloo side group whose
timeout is ``parallel.main_wait`` (a day by default), so no collective of the default group is
left waiting on rank 0 meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from syngrpo.scale import fsdp
from syngrpo.scale.fsdp import copy_shards, fsdp_units, is_sharded_module, materialize, shard
from syngrpo.scale.memory import state_bytes
from syngrpo.scale.optimizer_state import load_optimizer_state_by_name, names_for_positions, optimizer_state_by_name

# FSDP's helpers, optimizer state by name and state_bytes moved out of this module; these paths stay importable
__all__ = [
    "Parallel", "copy_shards", "fsdp_units", "is_sharded_module", "load_optimizer_state_by_name", "materialize",
    "optimizer_state_by_name", "shard", "state_bytes",
]


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
    #: the gloo group :meth:`wait_for_main` waits in (its timeout is ``main_wait``); made by :meth:`from_env`
    side_group: Any = None

    @classmethod
    def from_env(cls, strategy: str = "auto", *, reshard_after_forward: bool = True,
                 timeout: float = 1800.0, main_wait: float = 86400.0) -> Parallel:
        """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or stay single.

        ``fsdp`` in a single process (no torchrun) starts a one-rank process group itself,
        so the sharded code path runs on one GPU exactly as on many.  ``timeout`` bounds every
        collective of the process group; ``main_wait`` bounds :meth:`wait_for_main` instead.
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
        if out.world > 1:  # a collective: every rank creates it, in the same order
            out.side_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=main_wait))
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

    def wait_for_main(self) -> None:
        """Every rank leaves together once rank 0 arrives: call it after work only rank 0 does.

        A barrier of the gloo side group, whose timeout is ``parallel.main_wait`` rather than
        ``parallel.timeout``: rank 0 may evaluate, log, write a checkpoint or warm-start the policy for
        longer than a collective may wait, and without this the others would be waiting for it inside
        the next collective of the default group (an all-reduce of the next step) and abort the run.
        It runs on the host, so a GPU's NCCL watchdog has nothing pending meanwhile.
        """
        if not self.enabled:
            return
        import torch.distributed as dist

        dist.barrier(group=self.side_group)

    def shared_path(self, path: str | Path | None) -> Path | None:
        """Rank 0's directory ``path`` if every rank sees it (one filesystem), else ``None``; a collective.

        Rank 0 writes a file with a random token there and every rank looks for it: where the ranks
        share a filesystem, each can write its own shards of a checkpoint into rank 0's run directory.
        """
        if not self.enabled:
            return Path(path) if path is not None else None
        probe, offer = None, None
        if self.is_main:
            assert path is not None
            folder = Path(path).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            token = secrets.token_hex(8)
            probe = folder / f".shared-probe-{token}"
            probe.write_text(token, encoding="utf-8")
            offer = (str(folder), token)
        where, token = self.broadcast(offer)
        mine = Path(where) / f".shared-probe-{token}"
        try:
            sees = mine.read_text(encoding="utf-8") == token
        except OSError:
            sees = False
        every = self.gather(sees)
        if probe is not None:
            probe.unlink(missing_ok=True)
        return Path(where) if all(every) else None

    def sees_same_file(self, path: str | Path | None) -> Path | None:
        """Rank 0's file ``path`` if every rank reads the same bytes there (by hash), else ``None``; a collective."""
        def digest(p: Path) -> str | None:
            try:
                return hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                return None

        offer = (str(Path(path).resolve()), digest(Path(path))) if self.is_main and path is not None else None
        offer = self.broadcast(offer)
        if offer is None or offer[1] is None:
            return None
        where, expected = offer
        every = self.gather(digest(Path(where)) == expected)
        return Path(where) if all(every) else None

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
        """The module the training forward runs: the policy itself, wrapped in DDP, or sharded in place
        (a model :meth:`shard_from_main` already sharded is returned as it is)."""
        if self.sharded:
            if fsdp.is_sharded_module(model):
                return model
            return fsdp.shard(model, mp_policy=precision.fsdp_policy(),
                              reshard_after_forward=self.reshard_after_forward)
        if self.strategy == "ddp":
            import torch
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = next(model.parameters()).device.type == "cuda"
            return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None)
        return model

    def wrap_reference(self, model: Any) -> Any:
        """The frozen reference model, sharded like the policy under FSDP (it is as large)."""
        if self.sharded and not fsdp.is_sharded_module(model):
            return fsdp.shard(model, mp_policy=None, reshard_after_forward=self.reshard_after_forward)
        return model

    def shard_from_main(self, model: Any, *, mp_policy: Any | None, device: Any) -> Any:
        """Shard ``model`` with FSDP on every rank, its weights from rank 0's copy; a collective.

        Rank 0 holds the whole model, every other rank the architecture on the meta device
        (``load_policy(..., empty=True)``); rank 0's weights go straight into the other ranks'
        shards, unit by unit (:func:`syngrpo.scale.fsdp.shard_from_main`).
        """
        return fsdp.shard_from_main(model, mp_policy=mp_policy, device=device, is_main=self.is_main,
                                    reshard_after_forward=self.reshard_after_forward,
                                    broadcast_buffers=self.enabled)

    def shard_empty(self, model: Any, *, mp_policy: Any | None, device: Any) -> Any:
        """Shard an empty-built ``model`` and give its shards (uninitialised) storage: for weights that come
        next from a sharded checkpoint, each rank reading its own slices."""
        fsdp.shard(model, mp_policy=mp_policy, reshard_after_forward=self.reshard_after_forward)
        fsdp.materialize(model, device)
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

        Under FSDP the units are gathered once and freed after (:func:`syngrpo.scale.fsdp.unsharded`);
        a collective: every rank enters.  Otherwise the model holds its whole weights already.
        """
        if not self.sharded:
            yield
            return
        with fsdp.unsharded(model, reshard_after_forward=self.reshard_after_forward):
            yield

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

        full = names_for_positions(model, optimizer, state) if self.is_main and state is not None else {}
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
