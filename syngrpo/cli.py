"""The ``syngrpo`` command line.

Each subcommand lives in its own module under :mod:`syngrpo.commands` with two
functions, ``add_parser(subparsers)`` and ``run(args) -> int``; this file only
wires them.  Modules are imported when the parser is built, so they must import
nothing heavy at module level (``syngrpo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from syngrpo import __version__
from syngrpo.errors import SyngrpoError

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = ["train", "check", "plan", "sft", "eval", "data", "export", "serve", "synth", "make_tiny", "study",
            "plugins", "new_plugin"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syngrpo",
        description="Syn-GRPO: GRPO post-training of multimodal LLMs for visual perception with online data synthesis.",
    )
    parser.add_argument("--version", action="version", version=f"syngrpo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"syngrpo.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # `syngrpo plugins --json | head`: the reader has what it wanted; stop quietly, as a SIGPIPE would
        # (stdout goes to /dev/null so the interpreter's own last flush does not fail again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except SyngrpoError as exc:
        print(f"syngrpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("syngrpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
