"""FSDP2 sharding of the policy: one unit per transformer block, weights sent from rank 0, units gathered for
``generate``.

Its own module because it is the one place that knows FSDP2's calls (``fully_shard``, ``FSDPModule``,
DTensor's ``to_local`` and ``distribute_tensor``): :class:`~syngrpo.scale.parallel.Parallel` chooses a
strategy and calls these when it is ``fsdp``, so the trainer reads the same with one rank or many
(torchtune's ``training/_distributed.py`` has the same shape).  Torch is imported inside each function:
nothing here loads it before a sharded run needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from syngrpo.models.modules import unwrap_model


def shard(model: Any, *, mp_policy: Any | None, reshard_after_forward: bool = True,
          after_unit: Any | None = None) -> Any:
    """``fully_shard`` every block the model says must not be split (decoder layers, vision blocks), then the root.

    The blocks are the model's ``_no_split_modules`` (transformers names them for every family),
    so one FSDP unit is one transformer block: its weights are gathered just before it runs.
    ``after_unit(unit)`` runs after each unit is sharded (the root last): where its weights arrive.
    """
    from torch.distributed.fsdp import fully_shard

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
    A peft ``source`` gives its base weights to a plain ``target`` (:func:`base_parameters`): the
    reference of a LoRA run is the frozen base, and FSDP2 shards each parameter on its own (dim 0
    over the ranks), so a base weight's shard is the same with or without adapters beside it.
    """
    import torch

    with torch.no_grad():
        for (name, p), (other, q) in zip(base_parameters(source), target.named_parameters(), strict=True):
            if name != other:
                raise ValueError(f"copy_shards: {name} vs {other}: the models differ")
            q.to_local().copy_(p.to_local())


def base_parameters(model: Any) -> Iterator[tuple[str, Any]]:
    """``model``'s named parameters without LoRA adapters, named as in the model peft wrapped.

    peft renames a wrapped model's ``x.q_proj.weight`` to ``base_model.model.x.q_proj.base_layer.weight``
    and adds ``...q_proj.lora_A.default.weight``; a model without adapters is passed through.
    """
    wrapped = hasattr(model, "peft_config")
    for name, p in model.named_parameters():
        if not wrapped:
            yield name, p
        elif "lora_" not in name:
            yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), p


def fsdp_units(model: Any) -> list[Any]:
    """The FSDP units of a sharded model, the root last."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule) and m is not model]
    return [*units, model]


def shard_from_main(model: Any, *, mp_policy: Any | None, device: Any, is_main: bool,
                    reshard_after_forward: bool = True, broadcast_buffers: bool = True) -> Any:
    """Shard ``model`` with FSDP on every rank, its weights from rank 0's copy; a collective.

    Rank 0 (``is_main``) holds the whole model (loaded, maybe warm-started); every other rank holds the
    architecture with its parameters on the meta device (``load_policy(..., empty=True)``).
    Unit by unit (a decoder layer, a vision block, then the root's own parameters): ``fully_shard``
    it, give the other ranks' shards storage, and send each parameter from rank 0 as a scatter of
    its shards (``distribute_tensor(..., src_data_rank=0)``).  Rank 0 drops each whole parameter
    once its shards are out, so its peak is the whole model plus one unit's shards, and no other
    rank ever holds more than its shards plus one parameter's receive buffer.  Buffers (the
    rotary tables) are broadcast at the end (``broadcast_buffers``: there are other ranks).
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import distribute_tensor

    whole = dict(model.named_parameters()) if is_main else {}
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
                source = (whole.pop(name).detach().to(local.device) if is_main
                          else torch.empty(param.shape, dtype=param.dtype, device=local.device))
                local.copy_(distribute_tensor(source, param.device_mesh, param.placements,
                                              src_data_rank=0).to_local())
                del source
        pending[:] = [n for n in pending if n not in set(mine)]

    shard(model, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward, after_unit=fill)
    if broadcast_buffers:
        with torch.no_grad():
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
    if is_main and torch.cuda.is_available():
        torch.cuda.empty_cache()  # rank 0's whole copy: back to the device, not kept by the caching allocator
    return model


@contextlib.contextmanager
def unsharded(model: Any, *, reshard_after_forward: bool = True) -> Iterator[None]:
    """Every unit of a sharded ``model`` gathered inside (the whole compute-dtype policy on every rank).

    FSDP shards cannot feed ``generate`` (transformers encodes the image before the first
    forward, outside FSDP's hooks; REFERENCE.md), so the units are gathered once, generation
    runs with no per-token collectives (ranks may stop at different lengths), then the
    shards are freed and ``reshard_after_forward`` (the run's setting) is put back.  A collective:
    every rank enters.
    """
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
        model.set_reshard_after_forward(reshard_after_forward)
