"""docs/data.md runs when copied: every ``syngrpo`` command in it parses with the real command line, and every
format, benchmark and option it names exists (a renamed flag or benchmark fails here, not in a user's shell)."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

from syngrpo.cli import build_parser
from syngrpo.data.formats import make_format
from syngrpo.plugins import get_registry

PAGE = Path(__file__).resolve().parents[2] / "docs" / "data.md"
REGISTRY = get_registry()


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("syngrpo ")]


def test_the_page_shows_every_subcommand_format_and_benchmark():
    text = " ".join(commands())
    for sub in ("data formats", "data convert", "data prepare", "data sample", "eval"):
        assert f"syngrpo {sub}" in text, f"docs/data.md has no `syngrpo {sub}` command"
    page = PAGE.read_text(encoding="utf-8")
    for kind in ("dataset_formats", "benchmarks"):
        missing = [n for n in REGISTRY.names(kind) if f"`{n}`" not in page]
        assert not missing, f"docs/data.md does not describe the {kind} {missing}"


@pytest.mark.parametrize("line", commands())
def test_a_command_of_the_page_parses_and_names_what_exists(line):
    argv = shlex.split(line)[1:]
    args = build_parser().parse_args(argv)  # an unknown flag or a missing argument exits here
    assert getattr(args, "func", None), f"{line!r} runs no command"
    if args.command == "eval":
        unknown = [b for b in args.benchmark if b not in REGISTRY.names("benchmarks")]
        assert not unknown, f"{line!r}: no benchmark {unknown}"
    if args.command == "data" and args.data_command in ("convert", "prepare"):
        name = args.format if args.data_command == "convert" else args.name
        assert name in REGISTRY.names("dataset_formats"), f"{line!r}: no dataset format {name!r}"
        reader = type(make_format(REGISTRY, name))
        taken = set(inspect.signature(reader.__init__).parameters) - {"self"}
        for pair in args.option:
            key = pair.partition("=")[0]
            assert key in taken, f"{line!r}: {name} takes no option {key!r} (it takes {sorted(taken)})"
