"""``syngrpo make-tiny``: build tiny, randomly initialised models for tests and the quickstart, offline.

Same architectures as the real models (a policy of any registered model family,
SDXL + ControlNet outpainter, SAM segmenter), a few hundred thousand parameters
each, built from configs with a locally trained tokenizer.  Deterministic for a
seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: what can be built, each into ``OUT/<name>``
WHAT = ("policy", "sdxl", "sam")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="build tiny random models (policy, SDXL ControlNet, SAM) into a directory",
        description="Build tiny, randomly initialised models of the real architectures into OUT/policy, "
                    "OUT/sdxl and OUT/sam (no download). Deterministic for --seed. See docs/models.md.",
    )
    p.add_argument("--out", required=True, help="directory to build into")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--what", default=",".join(WHAT),
                   help=f"comma-separated subset of {','.join(WHAT)} (default: all)")
    p.add_argument("--family", default=None,
                   help="model family of the policy (`syngrpo plugins` lists model_families; default qwen2_5_vl)")
    p.add_argument("--arch", default=None, help=argparse.SUPPRESS)  # the older name of --family
    p.set_defaults(func=run)


def parse_what(value: str) -> list[str]:
    from syngrpo.errors import ConfigError

    names = [w.strip() for w in value.split(",") if w.strip()]
    unknown = sorted(set(names) - set(WHAT))
    if unknown or not names:
        raise ConfigError(f"--what takes a comma-separated subset of {','.join(WHAT)}; got {value!r}")
    return [w for w in WHAT if w in names]


def make_tiny(out: str | Path, *, seed: int = 0, what: list[str] | tuple[str, ...] = WHAT,
              family: str | None = None, arch: str | None = None) -> dict[str, Path]:
    """Build each of ``what`` into ``out/<name>``; returns ``{name: directory}``."""
    from syngrpo.models.family import DEFAULT_TINY_FAMILY, get_family

    out = Path(out)
    name = family or arch or DEFAULT_TINY_FAMILY
    fam = get_family(name) if "policy" in what else None  # an unknown family fails before any build
    built: dict[str, Path] = {}
    for item in what:
        target = out / item
        if item == "policy":
            assert fam is not None
            built[item] = Path(fam.build_tiny(target, seed=seed))
        elif item == "sdxl":
            from syngrpo.models.tiny_sdxl import build_tiny_sdxl_controlnet

            built[item] = Path(build_tiny_sdxl_controlnet(target, seed))
        elif item == "sam":
            from syngrpo.models.tiny_sam import build_tiny_sam

            built[item] = Path(build_tiny_sam(target, seed))
        else:  # pragma: no cover - parse_what rejects it
            raise ValueError(item)
    return built


def run(args: argparse.Namespace) -> int:
    built = make_tiny(args.out, seed=args.seed, what=parse_what(args.what), family=args.family, arch=args.arch)
    print(json.dumps({name: str(path) for name, path in built.items()}, indent=2))
    return 0
