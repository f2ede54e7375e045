"""``syngrpo plan``: will this run fit? Per-GPU memory by part, under ddp and fsdp, from the config alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="estimate per-GPU memory of a training run (ddp vs fsdp) before starting it",
        description="Build the policy's architecture on the meta device (no weights, offline for the paper's "
                    "models) and estimate per-GPU memory by part: master weights, compute copy, gradients, "
                    "AdamW states, reference model, vLLM reservation, activations, logits. The GPUs are the "
                    "config's `hardware` section (the machine it is written for) unless --gpus / --gpu-memory "
                    "say otherwise. When the run does not fit, the smallest GPU count and the smallest set of "
                    "knobs that fit are named. Several configs: one table, each on its own hardware. Exit status "
                    "0 when every run fits, 1 when one does not. See docs/training.md#memory-and-scale.",
    )
    p.add_argument("-c", "--config", nargs="+", metavar="CONFIG",
                   help="training config(s) (default: the quickstart); several give one summary table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs (processes) the run uses (default: the config's hardware.gpus, else 1)")
    p.add_argument("--gpu-memory", type=float, default=None, metavar="GiB",
                   help="memory of one GPU in GiB (default: the config's hardware.gpu_memory_gib, else 80)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="text tokens of a prompt besides the image (default 256)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="images one prompt shows (samples of several images: their image tokens add up; default: "
                        "the toy data's images_per_sample, else 1)")
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.set_defaults(func=run)


def _plan_one(path: str | Path, args: argparse.Namespace) -> dict[str, Any]:
    """The chosen plan of one config on its target GPUs, the alternatives, and (when it does not fit) the fixes."""
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.scale.advice import advice, smallest_gpu_count, smallest_knob_set
    from syngrpo.scale.plan import DEFAULT_PROMPT_TOKENS, PlanInputs, config_architecture, plan_memory, target_hardware

    cfg = load_config(TrainConfig, path, args.overrides)
    arch = config_architecture(cfg)
    target = target_hardware(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory)
    inp = PlanInputs.from_config(cfg, gpus=target.gpus, gpu_memory_gib=target.gpu_memory_gib,
                                 prompt_tokens=args.prompt_tokens or DEFAULT_PROMPT_TOKENS,
                                 images_per_sample=getattr(args, "images", None))
    chosen = plan_memory(arch, inp)
    others = ["ddp", "fsdp"] if target.gpus > 1 else ["single", "fsdp"]
    plans = [chosen if s == chosen.strategy else plan_memory(arch, inp, strategy=s) for s in others]
    if chosen.strategy not in others:
        plans.append(chosen)
    fits = chosen.fits
    return {"cfg": cfg, "arch": arch, "target": target, "inp": inp, "chosen": chosen, "plans": plans,
            "tips": [] if fits else advice(arch, inp),
            "gpus_fix": None if fits else smallest_gpu_count(arch, inp),
            "knobs_fix": None if fits else smallest_knob_set(arch, inp)}


def _fix_json(fix: Any) -> dict[str, Any] | None:
    return None if fix is None else {"setting": fix.setting, "peak_gib": round(fix.plan.peak_gib, 3),
                                     "gpus": fix.plan.gpus, "strategy": fix.plan.strategy}


def _as_json(r: dict[str, Any]) -> dict[str, Any]:
    t = r["target"]
    return {"chosen": r["chosen"].strategy, "fits": r["chosen"].fits,
            "hardware": {"gpus": t.gpus, "gpu_memory_gib": t.gpu_memory_gib, "source": t.source},
            "plans": [p.to_dict() for p in r["plans"]],
            "smallest": {"gpus": _fix_json(r["gpus_fix"]), "knobs": _fix_json(r["knobs_fix"])},
            "advice": [{"knob": k, "peak_gib": round(g, 3), "fits": f} for k, g, f in r["tips"]]}


def run(args: argparse.Namespace) -> int:
    from syngrpo.config import QUICKSTART_CONFIG
    from syngrpo.errors import ConfigError

    if args.gpus is not None and args.gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {args.gpus}")
    if getattr(args, "images", None) is not None and args.images < 1:
        raise ConfigError(f"--images must be at least 1, got {args.images}")
    if args.gpu_memory is not None and args.gpu_memory <= 0:
        raise ConfigError(f"--gpu-memory must be positive, got {args.gpu_memory}")
    configs = args.config or [QUICKSTART_CONFIG]
    if len(configs) > 1:
        return _run_many(configs, args)
    r = _plan_one(configs[0], args)
    if args.json:
        print(json.dumps(_as_json(r), indent=1))
        return 0 if r["chosen"].fits else 1
    _print_one(r)
    return 0 if r["chosen"].fits else 1


def _print_one(r: dict[str, Any]) -> None:
    from syngrpo.scale.plan import gpu_counts, markdown_table

    arch, chosen, inp, target = r["arch"], r["chosen"], r["inp"], r["target"]
    print(f"{arch.name}: {chosen.params / 1e9:.2f} B parameters ({arch.source}), "
          f"{chosen.trainable_params / 1e9:.3g} B trainable")
    print(f"{target.gpus} GPU(s) x {target.gpu_memory_gib:g} GiB ({target.source}); "
          f"parallel.strategy {inp.strategy} -> {chosen.strategy}; "
          f"micro-batch {chosen.micro_batch_rows} rows x {chosen.sequence_tokens:,} tokens "
          f"({chosen.image_tokens:,} image tokens at most"
          + (f", {inp.images_per_sample} images per prompt)" if inp.images_per_sample > 1 else ")"))
    if inp.batch_size % target.gpus:
        print(f"note: optim.batch_size {inp.batch_size} does not split over {target.gpus} GPUs and the trainer "
              f"refuses it; GPU counts it splits over: {', '.join(map(str, gpu_counts(inp.batch_size)))}")
    print()
    print(markdown_table(r["plans"], chosen=chosen.strategy))
    print()
    rollout, update = chosen.phase_bytes("rollout") / 2**30, chosen.phase_bytes("update") / 2**30
    memory = target.gpu_memory_gib
    if chosen.fits:
        print(f"fits: {chosen.strategy} needs {chosen.peak_gib:.1f} GiB of {memory:g} GiB per GPU "
              f"(sampling {rollout:.1f}, update {update:.1f})")
        return
    for problem in chosen.problems:  # the run cannot start whatever the peak (e.g. vLLM's KV cache)
        print(f"does not fit: {problem}")
    if chosen.problems and chosen.peak_gib <= memory:
        return
    print(f"does not fit: {chosen.strategy} needs {chosen.peak_gib:.1f} GiB per GPU, "
          f"{chosen.peak_gib - memory:.1f} GiB more than {memory:g} GiB "
          f"(sampling {rollout:.1f}, update {update:.1f}); largest parts: "
          + ", ".join(f"{p.name} {p.gib:.1f}" for p in sorted(chosen.parts, key=lambda p: -p.bytes)[:3]))
    print("smallest settings that fit (either one):")
    g, k = r["gpus_fix"], r["knobs_fix"]
    if g is not None:
        print(f"  GPUs:  {g.setting}  ({g.plan.strategy}, {g.plan.peak_gib:.1f} GiB per GPU of {memory:g} GiB)")
    else:
        print(f"  GPUs:  none of {memory:g} GiB fits (up to {inp.batch_size}: the batch must split over them)")
    if k is not None:
        print(f"  knobs: {k.setting}  ({k.plan.peak_gib:.1f} GiB per GPU on {target.gpus} GPU(s))")
    else:
        print(f"  knobs: no set of up to three fits on {target.gpus} GPU(s) of {memory:g} GiB")
    print("knobs to turn (peak per GPU with that change alone):")
    for knob, gib, fits in r["tips"]:
        print(f"  {knob:<60} {gib:7.1f} GiB  {'fits' if fits else ''}")


def _run_many(configs: list[str | Path], args: argparse.Namespace) -> int:
    """One row per config, each planned on its own target GPUs, sorted by path (shell globs sort by locale)."""
    results = {Path(c).as_posix(): _plan_one(c, args) for c in configs}
    if args.json:
        print(json.dumps({name: _as_json(r) for name, r in sorted(results.items())}, indent=1))
        return 0 if all(r["chosen"].fits for r in results.values()) else 1
    print("| config | policy | hardware | strategy | sampling GiB | update GiB | peak GiB/GPU | fits |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for name, r in sorted(results.items()):
        c, t = r["chosen"], r["target"]
        print(f"| `{name}` | {r['cfg'].model.policy} | {t.gpus} x {t.gpu_memory_gib:g} GiB | {c.strategy} | "
              f"{c.phase_bytes('rollout') / 2**30:.2f} | {c.phase_bytes('update') / 2**30:.2f} | "
              f"**{c.peak_gib:.2f}** | {'yes' if c.fits else '**no**'} |")
    misfits = [name for name, r in sorted(results.items()) if not r["chosen"].fits]
    print()
    if misfits:
        print(f"does not fit: {', '.join(misfits)} (`syngrpo plan -c CONFIG` for each says why and what would)")
        return 1
    print(f"all {len(results)} fit")
    return 0
