"""The one place that builds a run's components from its config (torchtune's recipe builders).

:meth:`syngrpo.train.trainer.Trainer.setup` is a list of calls into this module; pre-flight
(:mod:`syngrpo.train.preflight`), ``syngrpo sft`` and ``syngrpo eval`` read the same functions, so
each config section means one thing everywhere:

- ``parallel``: the process group and its strategy (:func:`join_run`);
- ``model``: the precision (:func:`run_precision`, after :func:`syngrpo.scale.dtype.compute_dtype`),
  how the policy loads (:func:`policy_load_options`), the policy and the reference model
  (:func:`load_policy_and_reference`, :func:`load_sharded_policy_and_reference`);
- ``rollout``: the rollout engine (:func:`build_engine`);
- ``rewards``: the reward terms and R_diversity (:func:`build_rewards`);
- ``algorithm``: the advantage estimator, the policy loss (:func:`policy_loss_options`) and
  shared-prefix scoring;
- ``optim``: AdamW, the LR schedule (:func:`lr_factor`) and the update (:func:`build_update`).

A component knows nothing of the trainer; the trainer only calls them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from syngrpo.algo.diversity import DiversitySmoother
from syngrpo.config import ModelConfig, TrainConfig
from syngrpo.errors import ConfigError, require
from syngrpo.models.policy import PolicyBundle, frozen, load_policy, reference_model
from syngrpo.models.scoring import supports_packed, supports_shared_prefix
from syngrpo.perception.rewards import make_reward
from syngrpo.rundir.checkpoint import consolidated_model_state, is_sharded, model_dir
from syngrpo.scale.parallel import Parallel, copy_shards
from syngrpo.scale.precision import Precision
from syngrpo.train.rewards import RewardScorer
from syngrpo.train.update import PolicyUpdate

log = logging.getLogger(__name__)

# ---- parallel and model -------------------------------------------------------------------------------


def join_run(cfg: TrainConfig) -> tuple[Parallel, TrainConfig]:
    """This process's place in the run, and the run's config.

    Under ``torchrun`` rank 0's config is the run's (a node resuming a run need not hold its
    config.yaml) and its ``parallel.strategy`` decides how every rank holds the policy.  In a single
    process ``fsdp`` needs a one-rank group of its own, so the strategy is known when the group is
    joined; a rank that started from another config (the resuming node) takes rank 0's.  The rules that
    need the number of processes are checked here (the others are pre-flight's).
    """
    p = cfg.parallel
    par = Parallel.from_env(p.strategy, reshard_after_forward=p.reshard_after_forward, timeout=p.timeout,
                            main_wait=p.main_wait)
    if par.enabled:
        run_cfg = par.broadcast(cfg)
        if run_cfg.parallel != p:
            par.use_strategy(run_cfg.parallel.strategy, reshard_after_forward=run_cfg.parallel.reshard_after_forward)
        cfg = run_cfg
    if cfg.hardware is not None and par.is_main and (note := cfg.hardware.mismatch(par.world)):
        log.warning(note)  # the section describes the target machine; nothing else here reads it
    if par.enabled and cfg.optim.batch_size % par.world:
        raise ConfigError(f"optim.batch_size ({cfg.optim.batch_size}) must be a multiple of the number of "
                          f"processes ({par.world})")
    return par, cfg


def run_precision(cfg: TrainConfig, par: Parallel) -> Precision:
    """The run's precision: ``model.dtype`` on this rank's device (float32 masters, compute in that dtype)."""
    return Precision.for_model(cfg.model.dtype, par.device(cfg.model.device), sharded=par.sharded)


def policy_load_options(model: ModelConfig, precision: Precision, device: str, *, trains: bool = True,
                        lora: bool = False) -> dict[str, Any]:
    """:func:`~syngrpo.models.policy.load_policy`'s keywords for the ``model`` section (LoRA adapters apart).

    Training loads float32 masters (with ``lora``: the frozen base in the compute dtype); evaluating a
    checkpoint (``trains=False``) loads in the compute dtype, without the training-only settings.
    """
    out: dict[str, Any] = dict(dtype=precision.load_dtype(lora=lora, trains=trains), device=device,
                               attn_implementation=model.attn_implementation, max_pixels=model.max_pixels,
                               min_pixels=model.min_pixels, family=model.family)
    if trains:
        out.update(freeze_vision=model.freeze_vision, gradient_checkpointing=model.gradient_checkpointing)
    return out


def load_adapters(model: Any, directory: Path) -> None:
    """Put the LoRA adapter weights a checkpoint saved (``adapter_model.safetensors``) into a peft model."""
    from safetensors.torch import load_file  # safetensors.torch imports torch's serialization on demand

    peft = require("peft", extra="lora", what="resuming a LoRA run", hint="pip install peft")
    peft.set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))


def lora_from_checkpoint(model: Any, ckpt: Path) -> None:
    """Put a LoRA run's checkpoint into a peft ``model`` built on the base: the saved adapters of a gathered
    checkpoint, or the whole peft state of a sharded one (FSDP), consolidated here."""
    if is_sharded(ckpt):
        model.load_state_dict(consolidated_model_state(ckpt))
    else:
        load_adapters(model, model_dir(ckpt))


def _from_checkpoint(ckpt: Path, policy_path: str, load_kwargs: dict[str, Any]) -> PolicyBundle:
    """A checkpoint's whole policy; one an FSDP run wrote sharded is consolidated here, in memory."""
    weights = consolidated_model_state(ckpt) if is_sharded(ckpt) else None
    bundle = load_policy(str(model_dir(ckpt)), state_dict=weights, **load_kwargs)
    if weights is not None:  # that directory holds no weights (the vLLM engine loads from here)
        bundle.name_or_path = policy_path
    return bundle


def load_policy_and_reference(cfg: TrainConfig, par: Parallel, precision: Precision, *, ckpt: Path | None,
                              resuming: bool, policy_path: str, load_kwargs: dict[str, Any], sft_dir: Path,
                              warm_start: Callable[[PolicyBundle], None]) -> tuple[PolicyBundle, Any | None]:
    """The policy (float32 masters) and the frozen reference of a run held whole on every rank.

    Resuming, rank 0 reads the checkpoint and broadcasts its weights (the other ranks build the
    architecture).  A fresh run warm-starts on rank 0 (``warm_start(bundle)``, when ``sft.enabled``) and
    every rank starts RL from rank 0's result.  The reference (when ``algorithm.beta`` > 0) is in the
    compute dtype: the policy as RL starts, or ``model.reference``, or the run's warm start when resuming.
    """
    lora = cfg.model.lora.model_dump() if cfg.model.lora.enabled else None
    if ckpt is not None and not lora:
        bundle = _from_checkpoint(ckpt, policy_path, load_kwargs)
    else:  # other ranks of a resumed run: the architecture here, the weights from rank 0 below
        bundle = load_policy(policy_path, lora=lora, **load_kwargs)
        if ckpt is not None:  # a LoRA checkpoint: base weights + saved adapters (or its sharded peft state)
            lora_from_checkpoint(bundle.model, ckpt)
    precision.upcast_trainable(bundle.model)
    if resuming:
        par.wait_for_main()  # rank 0 read the checkpoint's weights alone
        par.broadcast_weights(bundle.model)
    if not resuming and cfg.sft.enabled:
        if par.is_main:
            warm_start(bundle)
        par.wait_for_main()  # the warm start runs on rank 0 alone, for as long as it takes
        par.broadcast_weights(bundle.model)  # every rank starts RL from rank 0's warm start
    if cfg.algorithm.beta <= 0:
        return bundle, None
    # the reference lives in the compute dtype (bf16): it is never updated
    if not resuming and cfg.model.reference is None:
        return bundle, reference_model(bundle, dtype=precision.compute)  # the policy as RL starts
    from_run = cfg.model.reference is None and cfg.sft.enabled  # <run dir>/sft: on rank 0's disk only
    path = cfg.model.reference or (str(sft_dir) if cfg.sft.enabled else policy_path)
    if from_run and not par.is_main:
        path = policy_path
    # loaded, then cast in place: no second copy as reference_model's deepcopy would make
    ref = frozen(load_policy(path, **{**load_kwargs, "gradient_checkpointing": False}).model, precision.compute)
    if from_run:
        par.broadcast_weights(ref)
    return bundle, ref


def load_sharded_policy_and_reference(cfg: TrainConfig, par: Parallel, precision: Precision, *,
                                      ckpt: Path | None, resuming: bool, dcp_resume: Path | None, policy_path: str,
                                      load_kwargs: dict[str, Any], sft_dir: Path,
                                      warm_start: Callable[[PolicyBundle], None]) -> tuple[PolicyBundle, Any | None]:
    """FSDP: the policy (and the reference) loaded straight into their shards.

    Rank 0 alone loads a whole model (the base policy, a gathered checkpoint, or a sharded one
    consolidated when some rank cannot read it) and runs the SFT warm start on it; every other
    rank builds the architecture on the meta device and receives its shards from rank 0
    (:meth:`Parallel.shard_from_main`).  Host memory then holds one model on rank 0 and one
    shard on each other rank, where every rank used to hold the whole float32 model and a copy
    of it for the reference.  A sharded checkpoint every rank sees (``dcp_resume``) is not read here
    at all: the shards stay empty until each rank reads its slices of it (``load_sharded``, when the
    trainer restores).  The reference as RL starts is the policy's shards cast to the compute dtype,
    on each rank.  ``ckpt`` is known on rank 0 only; every rank decides by ``resuming``.
    """
    lora = cfg.model.lora.model_dump() if cfg.model.lora.enabled else None
    if not par.is_main or dcp_resume is not None:  # LoRA too: its adapters built on meta, filled from rank 0
        bundle = load_policy(policy_path, empty=True, lora=lora, **load_kwargs)
    elif ckpt is not None and not lora:
        bundle = _from_checkpoint(ckpt, policy_path, load_kwargs)
    else:
        bundle = load_policy(policy_path, lora=lora, **load_kwargs)
        if ckpt is not None:  # a LoRA checkpoint rank 0 alone reads: base weights + its adapters
            lora_from_checkpoint(bundle.model, ckpt)
    precision.upcast_trainable(bundle.model)
    if not resuming and cfg.sft.enabled and par.is_main:
        warm_start(bundle)  # on rank 0's whole policy, before it is sharded
    par.wait_for_main()  # rank 0 loaded (and warm-started) alone
    device, mp = bundle.device, precision.fsdp_policy()
    if dcp_resume is not None:
        par.shard_empty(bundle.model, mp_policy=mp, device=device)
    else:
        par.shard_from_main(bundle.model, mp_policy=mp, device=device)
    if cfg.algorithm.beta <= 0:
        return bundle, None
    compute = precision.compute  # the reference is never updated: no float32 master
    ref_kwargs = {**load_kwargs, "dtype": compute, "gradient_checkpointing": False}
    if not resuming and cfg.model.reference is None:  # the policy as RL starts (with LoRA: its base, no adapters)
        ref = frozen(load_policy(policy_path, empty=True, **ref_kwargs).model, compute)
        par.shard_empty(ref, mp_policy=None, device=device)
        copy_shards(bundle.model, ref)
        return bundle, ref
    # another model, or the warm start (rank 0's sft/): rank 0 loads it whole, the others get shards
    path = cfg.model.reference or (str(sft_dir) if cfg.sft.enabled else policy_path)
    if par.is_main:
        ref = frozen(load_policy(path, **ref_kwargs).model, compute)
    else:
        ref = frozen(load_policy(policy_path, empty=True, **ref_kwargs).model, compute)
    par.wait_for_main()
    par.shard_from_main(ref, mp_policy=None, device=device)
    return bundle, ref


# ---- rollout, rewards, algorithm -----------------------------------------------------------------------


def build_engine(registry: Any, cfg: TrainConfig, bundle: PolicyBundle, *, max_images: int = 1) -> Any:
    """The rollout engine ``rollout.engine`` names, sized for the longer of rollout and evaluation and for
    ``max_images`` images per prompt (the most a sample of the run shows)."""
    engine = registry.create("rollout_engines", cfg.rollout.engine, bundle=bundle, **cfg.rollout.engine_options)
    if hasattr(engine, "set_max_new_tokens"):  # an engine that sizes its sequences up front (vLLM)
        engine.set_max_new_tokens(max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens or 0))
    if max_images > 1 and hasattr(engine, "set_max_images"):  # an engine that budgets images up front (vLLM)
        engine.set_max_images(max_images)
    return engine


def build_rewards(registry: Any, cfg: TrainConfig, *, smoother: DiversitySmoother, par: Parallel) -> RewardScorer:
    """The reward of eq. 7: the terms of ``rewards.terms``, then R_diversity in ``syn`` mode."""
    terms = [(t, make_reward(registry, t.name, t.options, completions=t.completions)) for t in cfg.rewards.terms]
    accuracy = None  # V(q) is the spread of R_acc, scored apart when accuracy is not a term
    if all(t.name != "accuracy" for t in cfg.rewards.terms):
        accuracy = registry.create("rewards", "accuracy")
    return RewardScorer(terms, accuracy, diversity_weight=cfg.diversity_weight,
                        syn_mode=cfg.response_mode == "syn", smoother=smoother, par=par)


def build_estimator(registry: Any, cfg: TrainConfig) -> Any:
    """The advantage estimator (eq. 1, or a registered variant)."""
    adv = cfg.algorithm.advantage
    return registry.create("advantage_estimators", adv.name, **adv.options)


def policy_loss_options(cfg: TrainConfig) -> dict[str, Any]:
    """The options the policy loss is built with: the clipping, beta and aggregation of ``algorithm``, then its own."""
    a = cfg.algorithm
    return {"eps_low": a.eps_low, "eps_high": a.eps_high, "beta": a.beta, "aggregation": a.aggregation,
            **a.policy_loss.options}


def build_policy_loss(registry: Any, cfg: TrainConfig) -> Any:
    return registry.create("policy_losses", cfg.algorithm.policy_loss.name, **policy_loss_options(cfg))


def use_shared_prefix(cfg: TrainConfig, bundle: PolicyBundle) -> bool:
    """Whether completions are scored with each prompt encoded once (``algorithm.shared_prefix``)."""
    choice = cfg.algorithm.shared_prefix
    if cfg.algorithm.packed:
        if choice == "true":
            raise ConfigError("algorithm.packed and algorithm.shared_prefix=true do not compose yet: set "
                              "algorithm.shared_prefix to auto or false, or algorithm.packed to false")
        if not supports_packed(bundle.model):
            raise ConfigError(f"algorithm.packed needs a model with 3-D rotary positions (Qwen2-VL, Qwen2.5-VL); "
                              f"{type(bundle.model).__name__} has none: set algorithm.packed to false")
        return False
    if choice == "auto":
        return supports_shared_prefix(bundle.model, bundle.family) and not cfg.model.gradient_checkpointing
    return choice == "true"


# ---- optimisation --------------------------------------------------------------------------------------


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps (linear warmup, then the schedule)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_optimizer(cfg: TrainConfig, params: list[Any]) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.adam_eps, weight_decay=o.weight_decay)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    warmup, schedule = cfg.optim.warmup_steps, cfg.optim.schedule
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total_steps, warmup=warmup, schedule=schedule))


def build_update(cfg: TrainConfig, *, model: Any, policy: Any, ref_model: Any | None, optimizer: Any, scheduler: Any,
                 trainable: list[Any], policy_loss: Any, precision: Precision, par: Parallel,
                 shared_prefix: bool) -> PolicyUpdate:
    """Step 6 of the trainer (:mod:`syngrpo.train.update`) over these components and ``optim``/``algorithm``."""
    return PolicyUpdate(model=model, policy=policy, ref_model=ref_model, optimizer=optimizer, scheduler=scheduler,
                        trainable=trainable, policy_loss=policy_loss, precision=precision, par=par,
                        shared_prefix=shared_prefix, packed=cfg.algorithm.packed, grad_accum=cfg.optim.grad_accum,
                        token_budget=cfg.optim.token_budget,
                        updates_per_batch=cfg.algorithm.updates_per_batch, aggregation=cfg.algorithm.aggregation,
                        max_grad_norm=cfg.optim.max_grad_norm, temperature=cfg.rollout.temperature,
                        correction=cfg.rollout.importance_correction)


__all__ = [
    "build_engine", "build_estimator", "build_optimizer", "build_policy_loss", "build_rewards", "build_scheduler",
    "build_update", "join_run", "load_adapters", "load_policy_and_reference", "load_sharded_policy_and_reference",
    "lr_factor", "policy_load_options", "policy_loss_options", "run_precision", "use_shared_prefix",
]
