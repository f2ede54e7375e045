"""``syngrpo train``: run Syn-GRPO from a config; with no config, the quickstart.

The quickstart (``syngrpo train``, optionally ``--out DIR``) needs nothing but a
CPU: it builds a tiny random Qwen2.5-VL if absent, draws toy REC data, starts a
data server subprocess on 127.0.0.1 (procedural synthesizer), runs an SFT warm
start, then Syn-GRPO, evaluates, stops the server and prints the run directory.

Ctrl-C stops at the end of the step in flight and checkpoints it (exit status 130; ``--resume`` continues
from there); a second Ctrl-C stops at once and says how far back ``--resume`` goes
(:mod:`syngrpo.train.interrupt`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with Syn-GRPO (no config: the CPU quickstart)",
        description="Train a multimodal policy with Syn-GRPO. Without -c it runs the quickstart: a tiny model on "
                    "toy REC data with a local data server, a few minutes on a CPU. See docs/training.md.",
    )
    p.add_argument("-c", "--config", help="training config YAML (configs/*.yaml); default: the quickstart")
    p.add_argument("--out", help="run directory (default: logging.out_dir, else runs/<UTC time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set optim.lr=1e-5 --set synthesis.mode=sync")
    p.add_argument("--resume", metavar="DIR",
                   help="continue a run from its latest checkpoint (a run directory or a checkpoint directory); "
                        "the run's own config.yaml is used unless -c is given. Under torchrun only rank 0 reads "
                        "it (other nodes need no copy; their run directory is their --out)")
    p.set_defaults(func=run)


def resolve_run(args: argparse.Namespace):
    """(config, run directory, checkpoint to resume from) for the given arguments."""
    from syngrpo.config import QUICKSTART_CONFIG, load_train_config
    from syngrpo.errors import ConfigError
    from syngrpo.rundir.checkpoint import latest_checkpoint, no_checkpoint_message, run_dir_of

    resume = None
    if args.resume and os.environ.get("RANK", "0") != "0":
        # another node of a torchrun job: rank 0 reads the checkpoint (and the run's config) and sends
        # them; this rank needs no copy of it.  Its run directory is --out (default: the same path here).
        found = latest_checkpoint(args.resume)
        cfg = load_train_config(args.config or QUICKSTART_CONFIG, args.overrides)  # replaced by rank 0's
        run_dir = Path(args.out) if args.out else (run_dir_of(found) if found else Path(args.resume))
        return cfg, run_dir, found or Path(args.resume)
    if args.resume:
        resume = latest_checkpoint(args.resume)  # checked whole (and remembered: the trainer does not hash twice)
        if resume is None:
            raise ConfigError(no_checkpoint_message(args.resume))
        run_dir = run_dir_of(resume)
        config = args.config or run_dir / "config.yaml"
        cfg = load_train_config(config, args.overrides)
        if args.out and Path(args.out).resolve() != run_dir:
            raise ConfigError("--out and --resume disagree: a resumed run continues in its own directory "
                              f"({run_dir})")
        # a run directory: the trainer chooses again, and says in train.log which damaged checkpoints it passed over
        return cfg, run_dir, (run_dir if Path(args.resume).resolve() == run_dir else resume)
    cfg = load_train_config(args.config or QUICKSTART_CONFIG, args.overrides)
    out = args.out or cfg.logging.out_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    return cfg, Path(out), None


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from syngrpo.rundir.summary import summarize_run, write_run_summary
    from syngrpo.train.interrupt import resume_hint
    from syngrpo.train.trainer import Trainer

    cfg, run_dir, resume = resolve_run(args)
    hf_logging.disable_progress_bar()  # weight loading/saving bars would bury the training bar
    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    kind = "quickstart" if not args.config and not resume else "run"
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    if main_rank:
        print(f"syngrpo: {kind} in {run_dir}" + (f" (resuming {resume})" if resume else ""), flush=True)
    trainer = Trainer(cfg, run_dir, resume=resume)
    try:
        with trainer:
            summary = trainer.train()
            train_samples, eval_samples, task = trainer.train_samples, trainer.eval_samples, trainer.task
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the step loop: say what --resume can do
        if main_rank:
            hint = resume_hint(run_dir, step=trainer.step, save_every=cfg.logging.save_every)
            print(f"\nsyngrpo: {hint}", file=sys.stderr)
        return 130
    if not main_rank:
        return 0
    if summary.get("interrupted"):
        print(f"\nsyngrpo: stopped by Ctrl-C after step {summary['steps']}, checkpointed; continue with "
              f"`syngrpo train --resume {run_dir}`", file=sys.stderr)
        return 130
    from syngrpo.models.resolve import resolve_policy

    policy = resolve_policy(cfg.model)
    seconds = time.perf_counter() - started
    print(f"\nsyngrpo: done: {summary['steps']} steps in {seconds / 60:.1f} min\n")
    run_summary = summarize_run(run_dir, seconds=seconds, train_samples=train_samples,
                                chance=task.chance_baselines(eval_samples, train_samples),
                                chance_labels=task.chance_baseline_labels,
                                policy=policy if Path(policy).is_dir() else None)
    print(run_summary.body())
    print(f"run directory: {run_dir}")
    print(f"  summary: {write_run_summary(run_summary)}")
    print(f"  metrics: {run_dir / 'metrics.jsonl'}   plots: {run_dir / 'plots'}   gallery: {run_dir / 'gallery.html'}")
    print(f"  tensorboard --logdir {run_dir}")
    print(run_summary.verdict)
    return 0
