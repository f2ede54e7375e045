"""``syngrpo synth``: one synthesis, to files, for inspection (original | mask | result in one PNG)."""

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
        help="synthesize one image (keep the labelled foreground, repaint the rest) and save it for inspection",
        description="Run the data server's pipeline once, in this process: segmenter, keep-mask, synthesizer, "
                    "paste-back and the label check. Writes original | mask | result side by side.",
    )
    p.add_argument("image", help="input image file")
    p.add_argument("--box", dest="boxes", type=_box, action="append", required=True, metavar="X1,Y1,X2,Y2",
                   help="a labelled box in pixels (repeatable)")
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help="the label of each --box, in order (default 'object')")
    p.add_argument("-d", "--description", required=True, help="what the new image should show")
    p.add_argument("-o", "--output", required=True, help="side-by-side PNG to write")
    p.add_argument("--result", help="also write the result alone to this PNG")
    p.add_argument("--mask", help="also write the kept-foreground mask alone to this PNG")
    p.add_argument("-c", "--config", help="server config YAML: its synthesizer and segmenter are used")
    p.add_argument("--synthesizer", help="synthesizer plugin (overrides the config)")
    p.add_argument("--segmenter", help="segmenter plugin (overrides the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a server config key, e.g. --set synthesizer_options.steps=20")
    p.add_argument("--options", default="{}", help="per-job synthesizer options as JSON")
    p.add_argument("--device", default=None, help="device for the plugins (default: the config's first worker)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from PIL import Image

    from syngrpo.configio import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.plugins import get_registry
    from syngrpo.server.config import ServerConfig
    from syngrpo.server.workers import load_plugin_modules, make_plugin
    from syngrpo.synthesis import PipelineItem, run_pipeline, side_by_side

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
                           min_label_coverage=cfg.min_label_coverage)[0]
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
