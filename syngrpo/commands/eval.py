"""``syngrpo eval``: greedy evaluation of a checkpoint with the task's metrics (REC Acc@0.5; OVD/ISR mAP, GP, GR).

``--benchmark NAME`` (repeatable) runs a published protocol instead (``syngrpo.train.benchmark``): the
benchmark's prepared split, subset, seed, decoding, answer rules and metric, reported beside the paper's
Table 1-3 numbers (docs/data.md).
"""

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
    p.add_argument("--split", help="dataset file in the task's format (default: eval.split / data.eval / toy; "
                                   "with --benchmark: the benchmark's file, e.g. VLM-R1's refcoco_val.json)")
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME",
                   help="run a published protocol (repeatable): refcoco_val, refcocop_val, refcocog_val, lisa_test, "
                        "coco_filter, d3, 3dfront_isr (`syngrpo plugins` lists them)")
    p.add_argument("--data", default="data", metavar="DIR",
                   help="with --benchmark: where `syngrpo data prepare` laid the datasets out (default: data)")
    p.add_argument("--image-root", help="with --benchmark: where relative image paths of --split start")
    p.add_argument("--max-samples", type=int, help="with --benchmark: evaluate at most N of the protocol's samples "
                                                   "(a smoke run; the table marks it as not comparable)")
    p.add_argument("--max-new-tokens", type=int, help="with --benchmark: decode at most N tokens (a smoke run; "
                                                       "the table marks it as not comparable)")
    p.add_argument("--prompt", default="run", help="with --benchmark: `run` (the task's question in the run's "
                                                   "response format) or `vlmr1` (VLM-R1's evaluation question)")
    p.add_argument("--paper-model", help="with --benchmark: the paper's rows to show (Qwen2.5-VL-3B or "
                                         "Qwen2.5-VL-7B; default: from model.policy)")
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
    if args.benchmark:  # a benchmark brings its task and data: a bare model directory needs no run config
        return load_config(TrainConfig, None, [f"model.policy={args.checkpoint}", *args.overrides])
    raise ConfigError(f"no config.yaml found for {args.checkpoint!r}: pass -c CONFIG")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from syngrpo.train.evaluate import evaluate_checkpoint, markdown_table

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    cfg = _config_for(args)
    if args.benchmark:
        return _run_benchmarks(args, cfg)
    result, json_path, md_path = evaluate_checkpoint(cfg, args.checkpoint, split=args.split, out_dir=args.out,
                                                     batch_size=args.batch_size, progress=not args.no_progress)
    print(markdown_table(result.metrics, title=f"{cfg.data.task}: {args.split or cfg.eval.split or cfg.data.eval or 'toy'}"))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _run_benchmarks(args: argparse.Namespace, cfg) -> int:
    from syngrpo.train.benchmark import evaluate_benchmarks, paper_tables

    runs, out = evaluate_benchmarks(cfg, args.checkpoint, args.benchmark, data_root=args.data, data_file=args.split,
                                    image_root=args.image_root, out_dir=args.out, limit=args.max_samples,
                                    max_new_tokens=args.max_new_tokens,
                                    prompt_style=args.prompt, paper_model=args.paper_model,
                                    progress=not args.no_progress)
    print(paper_tables(runs, model=args.paper_model or None), end="")
    for run in runs:
        extra = ", ".join(f"{k} {100 * v:.2f}" for k, v in run.metrics.items() if k != "n")
        print(f"{run.benchmark.name}: {int(run.metrics.get('n', 0))} of {run.split_size} records ({extra})")
        for note in run.notes:
            print(f"  note: {note}")
    print(f"wrote {out / 'benchmarks.md'}, {out / 'benchmarks.json'} and one <benchmark>.predictions.json each")
    return 0
