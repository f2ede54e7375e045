"""``syngrpo check [-c CONFIG]``: every check ``syngrpo train`` runs before it loads a model.

Without ``-c`` it checks the quickstart, as ``syngrpo train`` and ``syngrpo plan`` default to it.

Validates the config, resolves every plugin name and option, and checks every dataset image
and box (:mod:`syngrpo.train.preflight`).  Exit status 0 when everything passes, 2 with the list of
problems otherwise.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a training config, its plugins and its dataset without training",
        description="Validate a training config: plugin names and options, the data server's synthesizer and "
                    "job options, every dataset image (exists, decodes) and box (inside the image, not inverted "
                    "or empty). Loads no model. `syngrpo train` runs the same checks first.",
    )
    p.add_argument("-c", "--config", help="training config YAML (default: the quickstart, as for `syngrpo train`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), as for `syngrpo train`")
    p.add_argument("--no-data", action="store_true", help="skip the dataset checks (images and boxes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.config import QUICKSTART_CONFIG, load_train_config
    from syngrpo.train.preflight import check_config

    cfg = load_train_config(args.config or QUICKSTART_CONFIG, args.overrides)
    report = check_config(cfg, data=not args.no_data)
    for note in report.notes:
        print(f"ok: {note}")
    report.raise_for_errors()
    print(f"syngrpo: {args.config or 'the quickstart'} passes every check")
    return 0
