"""``syngrpo sft``: the supervised warm start on its own (the paper's SFT baseline, or a start for RL).

Reads the ``model``, ``data`` and ``sft`` sections of a training config, teaches
the policy the response format on the task's training split
(:func:`syngrpo.train.sft.run_sft`), and saves the result with ``save_pretrained`` in
``OUT/model`` (usable as ``model.policy`` of a later run), with
``OUT/sft_metrics.jsonl`` (one line per step) and ``OUT/sft_stats.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="supervised warm start: teach a policy the response format on a task's data",
        description="Run the SFT warm start of a training config (model, data and sft sections) and save the "
                    "model to OUT/model. With no config: the quickstart config. See docs/models.md.",
    )
    p.add_argument("-c", "--config", help="training config YAML (default: the quickstart config)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set sft.steps=50")
    p.add_argument("--steps", type=int, help="override sft.steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.config import QUICKSTART_CONFIG, TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.models.policy import load_policy
    from syngrpo.models.resolve import resolve_policy
    from syngrpo.plugins import get_registry
    from syngrpo.scale.precision import Precision
    from syngrpo.train.components import policy_load_options
    from syngrpo.train.data import load_split
    from syngrpo.train.sft import run_sft

    path = args.config or (QUICKSTART_CONFIG if QUICKSTART_CONFIG.is_file() else None)
    cfg = load_config(TrainConfig, path, list(args.overrides or []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps if args.steps is not None else cfg.sft.steps

    task = get_registry().create("tasks", cfg.data.task, **cfg.data.task_options)
    samples = load_split(cfg, task, "train", out)
    m = cfg.model
    precision = Precision.for_model(m.dtype, m.device)  # float32 weights, compute in model.dtype (as RL)
    # the model section read as training reads it, except that a LoRA base stays float32 too: the
    # adapters are merged into it and the merged weights saved
    bundle = load_policy(resolve_policy(m), lora=m.lora.model_dump() if m.lora.enabled else None,
                         **policy_load_options(m, precision, m.device))
    metrics_path = out / "sft_metrics.jsonl"
    with metrics_path.open("w") as metrics:
        def log_fn(step: int, values: dict[str, float]) -> None:
            metrics.write(json.dumps({"step": step, **values}) + "\n")

        stats = run_sft(bundle, task, samples, steps=steps, lr=cfg.sft.lr, batch_size=cfg.sft.batch_size,
                        mode=cfg.response_mode, seed=cfg.seed, answer_weight=cfg.sft.answer_weight,
                        progress=not args.no_progress, log_fn=log_fn, precision=precision)
    model_out = out / "model"
    model = bundle.model
    if bundle.lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # a plain checkpoint that load_policy reads without peft
    model.save_pretrained(str(model_out), safe_serialization=True)
    bundle.processor.save_pretrained(str(model_out))
    summary = {k: v for k, v in stats.items() if k != "losses"}
    summary.update({"model": str(model_out), "samples": len(samples), "task": cfg.data.task,
                    "response_mode": cfg.response_mode})
    (out / "sft_stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"SFT: {steps} steps, loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}; model saved to {model_out}")
    return 0
