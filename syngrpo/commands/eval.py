"""``syngrpo eval``: greedy evaluation of a checkpoint with the task's metrics (REC Acc@0.5; OVD/ISR mAP, GP, GR)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a task split (greedy decoding)",
        description="Greedy-decode every sample of a split with a trained policy and compute the task's metrics. "
                    "Writes <name>.json, <name>.md and <name>.predictions.jsonl. See docs/training.md.",
    )
    p.add_argument("-c", "--config", help="training config (default: the run directory's config.yaml)")
    p.add_argument("--checkpoint", required=True,
                   help="a run directory (its latest checkpoint), a checkpoint directory, or a model directory")
    p.add_argument("--split", help="dataset file in the task's format (default: eval.split / data.eval / toy)")
    p.add_argument("--out", help="where to write the report (default: next to the checkpoint's model, eval/)")
    p.add_argument("--batch-size", type=int, help="prompts per generate call (default: eval.batch_size)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config_for(args: argparse.Namespace):
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.rundir.checkpoint import latest_checkpoint, run_dir_of

    if args.config:
        return load_config(TrainConfig, args.config, args.overrides)
    ckpt = latest_checkpoint(args.checkpoint)
    candidates = [run_dir_of(ckpt) / "config.yaml"] if ckpt is not None else []
    candidates.append(Path(args.checkpoint) / "config.yaml")
    for path in candidates:
        if path.is_file():
            return load_config(TrainConfig, path, args.overrides)
    raise ConfigError(f"no config.yaml found for {args.checkpoint!r}: pass -c CONFIG")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from syngrpo.train.evaluate import evaluate_checkpoint, markdown_table

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    cfg = _config_for(args)
    result, json_path, md_path = evaluate_checkpoint(cfg, args.checkpoint, split=args.split, out_dir=args.out,
                                                     batch_size=args.batch_size, progress=not args.no_progress)
    print(markdown_table(result.metrics, title=f"{cfg.data.task}: {args.split or cfg.eval.split or cfg.data.eval or 'toy'}"))
    print(f"wrote {json_path} and {md_path}")
    return 0
