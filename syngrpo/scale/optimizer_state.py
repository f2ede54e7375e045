"""Optimizer state keyed by parameter name, so a checkpoint resumes under any strategy and rank count.

``optimizer.state_dict()`` keys its state by position in the parameter groups; FSDP's full state
(``get_optimizer_state_dict``) and a sharded checkpoint key it by parameter name.  Its own module
because every strategy writes this one format (one process and DDP through these functions, FSDP
through torch's), and checkpoints of older versions, keyed by position, load through it too.
"""

from __future__ import annotations

from typing import Any


def optimizer_state_by_name(model: Any, optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()`` with parameter names in place of positions (the FSDP full-state format)."""
    return names_for_positions(model, optimizer, optimizer.state_dict())


def names_for_positions(model: Any, optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
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
