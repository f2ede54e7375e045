"""``syngrpo synth``: one synthesis, to files, for inspection (original | mask | result in one PNG);
``syngrpo synth --offline``: a whole offline dataset (the "Offline Generation" baseline, :mod:`syngrpo.train.offline`)."""

from __future__ import annotations

import argparse
import json


def _box(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x1,y1,x2,y2") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not x1,y1,x2,y2")
    return vals


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesize one image for inspection, or (--offline) a whole dataset before training",
        description="Run the data server's pipeline once, in this process: segmenter, keep-mask, synthesizer, "
                    "paste-back and the label check. Writes original | mask | result side by side. "
                    "With --offline: describe every training image with the config's describer, synthesize "
                    "--variants new images per image through the config's data server, and write them with a "
                    "dataset file (originals + synthesized) for plain GRPO (docs/training.md).",
    )
    p.add_argument("image", nargs="?", help="input image file (one-image mode)")
    p.add_argument("--box", dest="boxes", type=_box, action="append", default=[], metavar="X1,Y1,X2,Y2",
                   help="a labelled box in pixels (repeatable; one-image mode)")
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help="the label of each --box, in order (default 'object')")
    p.add_argument("-d", "--description", help="what the new image should show (one-image mode)")
    p.add_argument("-o", "--output", help="side-by-side PNG to write (one-image mode)")
    p.add_argument("--result", help="also write the result alone to this PNG")
    p.add_argument("--mask", help="also write the kept-foreground mask alone to this PNG")
    p.add_argument("-c", "--config", help="server config YAML: its synthesizer and segmenter are used; with "
                                          "--offline: a training config (its data, offline and synthesis sections)")
    p.add_argument("--synthesizer", help="synthesizer plugin (overrides the config)")
    p.add_argument("--segmenter", help="segmenter plugin (overrides the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set synthesizer_options.steps=20 (with --offline: a "
                        "training config key, e.g. --set offline.describer=template)")
    p.add_argument("--options", default="{}", help="per-job synthesizer options as JSON")
    p.add_argument("--device", default=None, help="device for the plugins (default: the config's first worker)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true",
                   help="offline generation: describe and synthesize the whole training set of -c CONFIG")
    p.add_argument("--variants", type=int, default=None, metavar="K",
                   help="with --offline: synthesized images per original (default: offline.variants)")
    p.add_argument("--out", help="with --offline: output directory (images/, train.jsonl, offline.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from syngrpo.errors import ConfigError

    if args.offline:
        return run_offline_command(args)
    missing = [flag for flag, value in (("IMAGE", args.image), ("--box", args.boxes), ("--description", args.description),
                                        ("--output", args.output)) if not value]
    if missing:
        raise ConfigError(f"syngrpo synth needs {', '.join(missing)} (or --offline -c CONFIG --out DIR)")

    from PIL import Image

    from syngrpo.config.io import load_config
    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.pipeline import PipelineItem, run_pipeline, side_by_side
    from syngrpo.synthesis.server.config import ServerConfig
    from syngrpo.synthesis.server.workers import load_plugin_modules, make_plugin

    cfg = load_config(ServerConfig, args.config, args.overrides)
    labels = list(args.labels) or ["object"] * len(args.boxes)
    if len(labels) != len(args.boxes):
        raise ConfigError(f"{len(args.boxes)} --box but {len(labels)} --label; give one label per box or none")
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError("--options must be a JSON object")
    try:
        with Image.open(args.image) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read image {args.image!r}: {exc}") from None
    w, h = image.size
    for b in args.boxes:
        if not (0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h):
            raise ConfigError(f"box {b} is inverted or outside the {w}x{h} image")

    registry = get_registry(load_plugin_modules(cfg.plugins)) if cfg.plugins else get_registry()
    device = args.device or cfg.workers[0]
    name = options.pop("synthesizer", None) or args.synthesizer or cfg.synthesizer
    synth_opts = cfg.served_synthesizers().get(name, {})  # a synthesizer the config does not name: no options
    seg_name = args.segmenter or cfg.segmenter
    seg_opts = cfg.segmenter_options if seg_name == cfg.segmenter else {}
    segmenter = make_plugin(registry, "segmenters", seg_name, seg_opts, device)
    synthesizer = make_plugin(registry, "synthesizers", name, synth_opts, device)
    item = PipelineItem(image, [tuple(b) for b in args.boxes], labels, args.description, args.seed, options)
    outcome = run_pipeline([item], segmenter=segmenter, synthesizer=synthesizer, mask_threshold=cfg.mask_threshold,
                           min_foreground_fraction=cfg.min_foreground_fraction,
                           min_label_coverage=cfg.min_label_coverage,
                           max_label_edge_gap=cfg.max_label_edge_gap)[0]
    if not outcome.ok:
        print(f"syngrpo synth: synthesis failed: {outcome.error}", file=sys.stderr)
        return 1
    assert outcome.image is not None and outcome.keep_mask is not None
    side_by_side([image, outcome.keep_mask, outcome.image]).save(args.output)
    if args.result:
        outcome.image.save(args.result)
    if args.mask:
        outcome.keep_mask.save(args.mask)
    print(f"wrote {args.output} (original | mask | result, {w}x{h} each) with {name} + {seg_name}")
    return 0


def run_offline_command(args: argparse.Namespace) -> int:
    """``syngrpo synth --offline -c CONFIG [--variants K] --out DIR``."""
    from syngrpo.config import load_train_config
    from syngrpo.errors import ConfigError
    from syngrpo.train.offline import run_offline

    if not args.config or not args.out:
        raise ConfigError("syngrpo synth --offline needs -c CONFIG (a training config) and --out DIR")
    if args.image or args.boxes or args.description or args.output:
        raise ConfigError("--offline takes its images from the config's data: drop IMAGE/--box/--description/--output")
    cfg = load_train_config(args.config, args.overrides)
    report = run_offline(cfg, args.out, variants=args.variants)
    return 0 if report.done or not report.submitted else 1
