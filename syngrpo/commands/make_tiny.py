"""``syngrpo make-tiny``: build tiny, randomly initialised models for tests and the quickstart, offline.

Same architectures as the real models, a few hundred thousand parameters each, built from configs
with a locally trained tokenizer.  Deterministic for a seed.  ``policy`` is built by a model family
(``--family``, :meth:`~syngrpo.models.family.ModelFamily.build_tiny`); every other name is a tiny
model a plugin registers with ``register_tiny_models`` (docs/hooks/tiny_models.md), e.g. the
outpainter or the segmenter a synthesizer plugin loads (``syngrpo plugins`` lists them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError

#: the tiny policy, built by the model family; every other name is a registered tiny model
POLICY = "policy"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="build tiny random models (the policy, and the tiny models plugins register) into a directory",
        description="Build tiny, randomly initialised models of the real architectures into OUT/<name> (no "
                    "download): the policy of a model family and every tiny model a plugin registers "
                    "(`syngrpo plugins` lists them under tiny_models). Deterministic for --seed. See docs/models.md.",
    )
    p.add_argument("--out", required=True, help="directory to build into")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--what", default=None,
                   help="comma-separated subset of policy and the registered tiny models (default: all)")
    p.add_argument("--family", default=None,
                   help="model family of the policy (`syngrpo plugins` lists model_families; default qwen2_5_vl)")
    p.add_argument("--arch", default=None, help=argparse.SUPPRESS)  # the older name of --family
    p.set_defaults(func=run)


def available(registry: Any | None = None) -> list[str]:
    """What ``make-tiny`` can build: ``policy``, then the registered tiny models by name."""
    from syngrpo.plugins import get_registry  # commands import lazily: `syngrpo --help` loads every command module

    names = (registry or get_registry()).names("tiny_models")
    if POLICY in names:
        provider = (registry or get_registry()).get("tiny_models", POLICY).plugin
        raise ConfigError(f"plugin {provider!r} registers a tiny model named {POLICY!r}: that name is the model "
                          "family's tiny policy (--family); register it under another name")
    return [POLICY, *names]


def parse_what(value: str, names: Sequence[str]) -> list[str]:
    """``--what``'s comma-separated names, in the order of ``names``; an unknown or empty one is a ConfigError."""
    asked = [w.strip() for w in value.split(",") if w.strip()]
    unknown = sorted(set(asked) - set(names))
    if unknown or not asked:
        raise ConfigError(f"--what takes a comma-separated subset of {','.join(names)}; got {value!r}")
    return [w for w in names if w in asked]


def make_tiny(out: str | Path, *, seed: int = 0, what: Sequence[str] | None = None, family: str | None = None,
              arch: str | None = None, registry: Any | None = None) -> dict[str, Path]:
    """Build each of ``what`` (default: everything :func:`available`) into ``out/<name>``; returns ``{name: directory}``."""
    from syngrpo.models.family import DEFAULT_TINY_FAMILY, get_family
    from syngrpo.plugins import get_registry
    from syngrpo.rundir.progress import phase

    registry = registry or get_registry()
    names = available(registry)
    what = parse_what(",".join(what), names) if what is not None else names
    out = Path(out)
    name = family or arch or DEFAULT_TINY_FAMILY
    fam = get_family(name, registry) if POLICY in what else None  # an unknown family fails before any build
    built: dict[str, Path] = {}
    for item in what:
        target = out / item
        with phase(f"building the tiny {item if item != POLICY else name + ' policy'} into {target}"):
            if item == POLICY:
                assert fam is not None
                built[item] = Path(fam.build_tiny(target, seed=seed))
            else:
                built[item] = Path(registry.get("tiny_models", item).factory(target, seed=seed))
    return built


def run(args: argparse.Namespace) -> int:
    from syngrpo.rundir.progress import quiet_library_bars

    quiet_library_bars(diffusers=args.what is None or "sdxl" in args.what)
    what = parse_what(args.what, available()) if args.what is not None else None
    built = make_tiny(args.out, seed=args.seed, what=what, family=args.family, arch=args.arch)
    print(json.dumps({name: str(path) for name, path in built.items()}, indent=2))
    return 0
