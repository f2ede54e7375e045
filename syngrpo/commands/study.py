"""``syngrpo study``: experiments made of whole training runs, reported like the paper (docs/study.md).

* default: the toy study (:mod:`syngrpo.experiments.study`): toy splits, one shared SFT warm start, the paper's
  methods as arms over several seeds, then ``table.md`` (Table 1 shape) and the Fig. 2 / 7 / 8 analogues;
* ``--preset mechanism``: the pre-registered mechanism experiment (:mod:`syngrpo.experiments.mechanism`);
* ``--preset quickstart-control``: the main job's Syn-GRPO against plain GRPO (:mod:`syngrpo.experiments.control`);
* ``--merge``: pool toy studies that ran apart; ``--report``: regenerate docs/study.md's tables and figures from the
  kept run data (:mod:`syngrpo.experiments.regenerate`).

Finished pieces are reused when the command is run again with the same settings, so an interrupted experiment
continues.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = "configs/study_rec_toy.yaml"
#: --preset -> (its config file, what it runs)
PRESETS = {"mechanism": "configs/mechanism_rec_toy.yaml", "quickstart-control": "configs/quickstart_control.yaml"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="experiments from whole runs: the toy study, the mechanism experiment, the quickstart's control",
        description="The toy study (default), --preset mechanism or --preset quickstart-control; --merge pools "
                    "toy studies, --report regenerates docs/study.md's numbers from kept run data. See docs/study.md.",
    )
    p.add_argument("-c", "--config", default=None, help=f"config YAML (default: {DEFAULT_CONFIG}, or the preset's)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="run a named experiment with its config: " + ", ".join(f"{k} ({v})" for k, v in PRESETS.items()))
    p.add_argument("--out", default="runs/study", help="output directory (default: runs/study)")
    p.add_argument("--quick", action="store_true", help="the toy study config's quick section: same code (CI)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (overrides the config)")
    p.add_argument("--arms", default=None, help="comma-separated arms to run (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set rl.optim.max_steps=10")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="with --preset: this process runs every N-th run from the I-th (start N processes, I = 0..N-1)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="instead of running: pool finished studies that ran other seeds or arms of the same study "
                        "into one table and figures in --out")
    p.add_argument("--report", action="store_true",
                   help="instead of running: regenerate docs/study.md's generated blocks and figures from "
                        "docs/study/data (the kept run data)")
    p.add_argument("--keep", action="append", default=[], metavar="DIR",
                   help="with --report: first copy the kept data of a finished experiment (DIR/kept/) into "
                        "docs/study/data/<its experiment>/ (repeatable)")
    p.set_defaults(func=run)


def _shard(text: str) -> tuple[int, int]:
    from syngrpo.errors import ConfigError

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard wants I/N (e.g. 1/3), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: I must be in 0..N-1")
    return i, n


def run(args: argparse.Namespace) -> int:
    from syngrpo.errors import ConfigError
    from syngrpo.rundir.progress import quiet_library_bars

    quiet_library_bars()  # the study loads and saves policies dozens of times: no loading bars between its lines

    if args.report:
        from syngrpo.experiments.regenerate import keep, regenerate

        for where in args.keep:
            print(f"kept {where} -> {keep(where)}")
        for path in regenerate():
            print(f"wrote {path}")
        return 0
    if args.keep:
        raise ConfigError("--keep copies a finished experiment's kept data for --report: add --report")
    if args.merge:
        from syngrpo.experiments.merge import merge_studies

        if args.config or args.quick or args.seeds or args.arms or args.overrides or args.preset:
            raise ConfigError("--merge pools finished studies as they ran: it takes only --out")
        merge_studies(args.merge, args.out)
        print((Path(args.out) / "table.md").read_text())
        return 0

    overrides = list(args.overrides or [])
    if args.arms:
        overrides.append("arms=[" + ",".join(a.strip() for a in args.arms.split(",") if a.strip()) + "]")
    if args.seeds is not None:
        overrides.append(f"seeds={int(args.seeds)}")
    if args.preset:
        if args.quick:
            raise ConfigError(f"--quick belongs to the toy study; --preset {args.preset} is sized by its config")
        path = args.config or PRESETS[args.preset]
        if args.preset == "mechanism":
            from syngrpo.experiments.mechanism import load_mechanism_config, run_mechanism

            run_mechanism(load_mechanism_config(path, overrides), args.out, shard=_shard(args.shard))
        else:
            from syngrpo.experiments.control import load_control_config, run_control

            run_control(load_control_config(path, overrides), args.out, shard=_shard(args.shard))
        return 0

    from syngrpo.experiments.study import load_study_config, run_study

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    run_study(load_study_config(path, overrides, quick=args.quick), args.out)
    return 0
