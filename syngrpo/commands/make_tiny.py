"""``syngrpo make-tiny``: build tiny, randomly initialised models for tests and the quickstart, offline.

Same architectures as the real models (Qwen2.5-VL policy, SDXL + ControlNet
outpainter, SAM segmenter), a few hundred thousand parameters each, built from
configs with a locally trained tokenizer.  Deterministic for a seed.
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
    p.add_argument("--arch", choices=("qwen2_5_vl", "qwen2_vl"), default="qwen2_5_vl",
                   help="policy architecture (default qwen2_5_vl)")
    p.set_defaults(func=run)


def parse_what(value: str) -> list[str]:
    from syngrpo.errors import ConfigError

    names = [w.strip() for w in value.split(",") if w.strip()]
    unknown = sorted(set(names) - set(WHAT))
    if unknown or not names:
        raise ConfigError(f"--what takes a comma-separated subset of {','.join(WHAT)}; got {value!r}")
    return [w for w in WHAT if w in names]


def make_tiny(out: str | Path, *, seed: int = 0, what: list[str] | tuple[str, ...] = WHAT,
              arch: str = "qwen2_5_vl") -> dict[str, Path]:
    """Build each of ``what`` into ``out/<name>``; returns ``{name: directory}``."""
    out = Path(out)
    built: dict[str, Path] = {}
    for name in what:
        target = out / name
        if name == "policy":
            from syngrpo.models.tiny_policy import build_tiny_policy

            built[name] = Path(build_tiny_policy(target, seed=seed, arch=arch))  # type: ignore[arg-type]
        elif name == "sdxl":
            from syngrpo.models.tiny_sdxl import build_tiny_sdxl_controlnet

            built[name] = Path(build_tiny_sdxl_controlnet(target, seed))
        elif name == "sam":
            from syngrpo.models.tiny_sam import build_tiny_sam

            built[name] = Path(build_tiny_sam(target, seed))
        else:  # pragma: no cover - parse_what rejects it
            raise ValueError(name)
    return built


def run(args: argparse.Namespace) -> int:
    built = make_tiny(args.out, seed=args.seed, what=parse_what(args.what), arch=args.arch)
    print(json.dumps({name: str(path) for name, path in built.items()}, indent=2))
    return 0
