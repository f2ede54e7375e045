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
            if is_sharded_module(model):
                return model
            return shard(model, mp_policy=precision.fsdp_policy(), reshard_after_forward=self.reshard_after_forward)
        if self.strategy == "ddp":
            import torch
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = next(model.parameters()).device.type == "cuda"
            return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None)
        return model

    def wrap_reference(self, model: Any) -> Any:
        """The frozen reference model, sharded like the policy under FSDP (it is as large)."""
        if self.sharded and not is_sharded_module(model):
            return shard(model, mp_policy=None, reshard_after_forward=self.reshard_after_forward)
        return model

    def shard_from_main(self, model: Any, *, mp_policy: Any | None, device: Any) -> Any:
        """Shard ``model`` with FSDP on every rank, its weights from rank 0's copy; a collective.

        Rank 0 holds the whole model (loaded, maybe warm-started); every other rank holds the
        architecture with its parameters on the meta device (``load_policy(..., empty=True)``).
        Unit by unit (a decoder layer, a vision block, then the root's own parameters): ``fully_shard``
        it, give the other ranks' shards storage, and send each parameter from rank 0 as a scatter of
        its shards (``distribute_tensor(..., src_data_rank=0)``).  Rank 0 drops each whole parameter
        once its shards are out, so its peak is the whole model plus one unit's shards, and no other
        rank ever holds more than its shards plus one parameter's receive buffer.  Buffers (the
        rotary tables) are broadcast at the end.
        """
        import torch
        import torch.distributed as dist
        from torch.distributed.tensor import distribute_tensor

        whole = dict(model.named_parameters()) if self.is_main else {}
        pending = [name for name, _ in model.named_parameters()]
        prefixes = {id(m): name for name, m in model.named_modules()}

        def fill(unit: Any) -> None:
            prefix = prefixes[id(unit)]
            mine = [n for n in pending if unit is model or n.startswith(prefix + ".")]
            materialize(model, device, names=mine)
            with torch.no_grad():
                for name in mine:
                    param = model.get_parameter(name)
                    local = param.to_local()
                    source = (whole.pop(name).detach().to(local.device) if self.is_main
                              else torch.empty(param.shape, dtype=param.dtype, device=local.device))
                    local.copy_(distribute_tensor(source, param.device_mesh, param.placements,
                                                  src_data_rank=0).to_local())
                    del source
            pending[:] = [n for n in pending if n not in set(mine)]

        shard(model, mp_policy=mp_policy, reshard_after_forward=self.reshard_after_forward, after_unit=fill)
        if self.enabled:
            with torch.no_grad():
                for buf in model.buffers():
                    dist.broadcast(buf, src=0)
        if self.is_main and torch.cuda.is_available():
            torch.cuda.empty_cache()  # rank 0's whole copy: back to the device, not kept by the caching allocator
        return model

    def shard_empty(self, model: Any, *, mp_policy: Any | None, device: Any) -> Any:
        """Shard an empty-built ``model`` and give its shards (uninitialised) storage: for weights that come
        next from a sharded checkpoint, each rank reading its own slices."""
        shard(model, mp_policy=mp_policy, reshard_after_forward=self.reshard_after_forward)
        materialize(model, device)
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


def shard(model: Any, *, mp_policy: Any | None, reshard_after_forward: bool = True,
          after_unit: Any | None = None) -> Any:
    """``fully_shard`` every block the model says must not be split (decoder layers, vision blocks), then the root.

    The blocks are the model's ``_no_split_modules`` (transformers names them for every family),
    so one FSDP unit is one transformer block: its weights are gathered just before it runs.
    ``after_unit(unit)`` runs after each unit is sharded (the root last): where its weights arrive.
    """
    from torch.distributed.fsdp import fully_shard

    from syngrpo.models.modules import unwrap_model

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
        if after_unit is not None:
            after_unit(block)
    fully_shard(model, **kwargs)
    if after_unit is not None:
        after_unit(model)
    return model


def is_sharded_module(model: Any) -> bool:
    """Whether ``fully_shard`` has been applied to ``model`` (its root)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def materialize(model: Any, device: Any, names: list[str] | None = None) -> None:
    """Real (uninitialised) storage on ``device`` for meta parameters of an empty-built, sharded model.

    ``names`` limits it to those parameters' modules (one FSDP unit at a time); each module is
    emptied without recursing, and ``to_empty`` replacing its buffers too, they are kept aside and
    copied back: the rotary tables computed at construction are in no state dict.
    """
    import torch

    if names is None:
        names = [n for n, p in model.named_parameters() if p.is_meta]
    owners: dict[str, Any] = {}
    for name in names:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        module = model.get_submodule(owner)
        if any(p.is_meta for p in module.parameters(recurse=False)):
            owners[owner] = module
    for module in owners.values():
        kept = {n: b.detach().clone() for n, b in module.named_buffers(recurse=False)}
        module.to_empty(device=device, recurse=False)
        with torch.no_grad():
            for n, b in module.named_buffers(recurse=False):
                b.copy_(kept[n])


def copy_shards(source: Any, target: Any) -> None:
    """``target``'s local shards := ``source``'s, cast to ``target``'s dtype; no communication.

    Both models sharded alike (same architecture, same ranks): the sharded twin of ``deepcopy``
    followed by ``.to(dtype)``, which makes the reference model from the policy as RL starts.
    """
    import torch

    with torch.no_grad():
        for (name, p), (other, q) in zip(source.named_parameters(), target.named_parameters(), strict=True):
            if name != other:
                raise ValueError(f"copy_shards: {name} vs {other}: the models differ")
            q.to_local().copy_(p.to_local())


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
