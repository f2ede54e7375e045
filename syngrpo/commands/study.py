"""``syngrpo study``: Syn-GRPO against plain GRPO on the toy REC task, reported like the paper.

Runs :func:`syngrpo.experiments.study.run_study`: toy splits, one shared SFT warm start, the RL
arms (GRPO, Syn-GRPO w/o R_diversity, Syn-GRPO, GRPO + entropy loss) over several
seeds, then ``table.md`` (Table 1 shape) and the Fig. 2 / 7 / 8 analogues in
``--out``.  Finished pieces are reused when the command is run again with the same
settings, so an interrupted study continues.  See docs/study.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = "configs/study_rec_toy.yaml"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the CPU study: Syn-GRPO vs GRPO on toy REC (table + figures like the paper)",
        description="Shared SFT warm start, then RL arms GRPO / Syn-GRPO w/o R_diversity / Syn-GRPO / "
                    "GRPO + entropy loss over several seeds; writes table.md and PNG figures. See docs/study.md.",
    )
    p.add_argument("-c", "--config", default=None, help=f"study config YAML (default: {DEFAULT_CONFIG})")
    p.add_argument("--out", default="runs/study", help="output directory (default: runs/study)")
    p.add_argument("--quick", action="store_true", help="the config's quick section: same code, minutes (CI)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (overrides the config)")
    p.add_argument("--arms", default=None, help="comma-separated arms to run (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set rl.optim.max_steps=10")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="instead of running: pool finished studies that ran other seeds or arms of the same study "
                        "into one table and figures in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.errors import ConfigError
    from syngrpo.experiments.study import load_study_config, merge_studies, run_study
    from syngrpo.rundir.progress import quiet_library_bars

    quiet_library_bars()  # the study loads and saves policies dozens of times: no loading bars between its lines
    if args.merge:
        if args.config or args.quick or args.seeds or args.arms or args.overrides:
            raise ConfigError("--merge pools finished studies as they ran: it takes only --out")
        merge_studies(args.merge, args.out)
        print((Path(args.out) / "table.md").read_text())
        return 0

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides = list(args.overrides or [])
    if args.arms:
        overrides.append("arms=[" + ",".join(a.strip() for a in args.arms.split(",") if a.strip()) + "]")
    cfg = load_study_config(path, overrides, quick=args.quick, seeds=args.seeds)
    run_study(cfg, args.out)
    return 0
