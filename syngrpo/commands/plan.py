"""``syngrpo plan``: will this run fit? Per-GPU memory by part, under ddp and fsdp, from the config alone."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="estimate per-GPU memory of a training run (ddp vs fsdp) before starting it",
        description="Build the policy's architecture on the meta device (no weights, offline for the paper's "
                    "models) and estimate per-GPU memory by part: master weights, compute copy, gradients, "
                    "AdamW states, reference model, vLLM reservation, activations, logits. Exit status 0 when "
                    "the run fits, 1 when it does not. See docs/training.md#memory-and-scale.",
    )
    p.add_argument("-c", "--config", help="training config (default: the quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs (processes) the run uses (default 1)")
    p.add_argument("--gpu-memory", type=float, default=80.0, metavar="GiB",
                   help="memory of one GPU in GiB (default 80)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="text tokens of a prompt besides the image (default 256)")
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.config import QUICKSTART_CONFIG, TrainConfig
    from syngrpo.configio import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.plan import (
        DEFAULT_PROMPT_TOKENS,
        PlanInputs,
        advice,
        config_architecture,
        markdown_table,
        plan_memory,
    )

    if args.gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {args.gpus}")
    if args.gpu_memory <= 0:
        raise ConfigError(f"--gpu-memory must be positive, got {args.gpu_memory}")
    cfg = load_config(TrainConfig, args.config or QUICKSTART_CONFIG, args.overrides)
    arch = config_architecture(cfg)
    inp = PlanInputs.from_config(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory,
                                 prompt_tokens=args.prompt_tokens or DEFAULT_PROMPT_TOKENS)
    chosen = plan_memory(arch, inp)
    others = ["ddp", "fsdp"] if args.gpus > 1 else ["single", "fsdp"]
    plans = [chosen if s == chosen.strategy else plan_memory(arch, inp, strategy=s) for s in others]
    if chosen.strategy not in others:
        plans.append(chosen)
    tips = [] if chosen.fits else advice(arch, inp)

    if args.json:
        print(json.dumps({"chosen": chosen.strategy, "fits": chosen.fits,
                          "plans": [p.to_dict() for p in plans],
                          "advice": [{"knob": k, "peak_gib": round(g, 3), "fits": f} for k, g, f in tips]},
                         indent=1))
        return 0 if chosen.fits else 1

    print(f"{arch.name}: {chosen.params / 1e9:.2f} B parameters ({arch.source}), "
          f"{chosen.trainable_params / 1e9:.3g} B trainable")
    print(f"{args.gpus} GPU(s) x {args.gpu_memory:g} GiB; parallel.strategy {inp.strategy} -> {chosen.strategy}; "
          f"micro-batch {chosen.micro_batch_rows} rows x {chosen.sequence_tokens:,} tokens "
          f"({chosen.image_tokens:,} image tokens at most)")
    print()
    print(markdown_table(plans, chosen=chosen.strategy))
    print()
    rollout, update = chosen.phase_bytes("rollout") / 2**30, chosen.phase_bytes("update") / 2**30
    if chosen.fits:
        print(f"fits: {chosen.strategy} needs {chosen.peak_gib:.1f} GiB of {args.gpu_memory:g} GiB per GPU "
              f"(sampling {rollout:.1f}, update {update:.1f})")
        return 0
    print(f"does not fit: {chosen.strategy} needs {chosen.peak_gib:.1f} GiB per GPU, "
          f"{chosen.peak_gib - args.gpu_memory:.1f} GiB more than {args.gpu_memory:g} GiB "
          f"(sampling {rollout:.1f}, update {update:.1f}); largest parts: "
          + ", ".join(f"{p.name} {p.gib:.1f}" for p in sorted(chosen.parts, key=lambda p: -p.bytes)[:3]))
    print("knobs to turn (peak per GPU with that change alone):")
    for knob, gib, fits in tips:
        print(f"  {knob:<60} {gib:7.1f} GiB  {'fits' if fits else ''}")
    return 1
