"""``syngrpo synth``: one synthesis, to files, for inspection (original | mask | result in one PNG);
``syngrpo synth --offline``: a whole offline dataset (the "Offline Generation" baseline, :mod:`syngrpo.train.offline`)."""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    from syngrpo.rundir.progress import quiet_library_bars
    from syngrpo.synthesis.pipeline import PipelineItem, job_options_model, run_pipeline, side_by_side
    from syngrpo.synthesis.server.config import ServerConfig
    from syngrpo.synthesis.server.validation import ApiError, check_job_options
    from syngrpo.synthesis.server.workers import load_plugin_modules

    cfg = load_config(ServerConfig, args.config, one_image_overrides(args))
    quiet_library_bars(diffusers=cfg.synthesizer == "sdxl_controlnet")
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
    served = cfg.served_synthesizers()
    name = options.pop("synthesizer", None) or cfg.synthesizer
    if name not in served:
        raise ConfigError(f"--options names synthesizer {name!r}, which this config does not serve "
                          f"({', '.join(served)}); add it under extra_synthesizers or use --synthesizer {name}")
    factory = registry.get("synthesizers", name).factory
    try:
        check_job_options(name, options, job_options_model(factory))
    except ApiError as exc:
        raise ConfigError(f"--options: {exc.message}") from None
    segmenter = _build(registry, "segmenters", cfg.segmenter, cfg.segmenter_options, device)
    synthesizer = _build(registry, "synthesizers", name, served[name], device)
    print(f"syngrpo synth: {name} on {device}" + (f" with {_cpu_hint(name, served[name], options)}"
                                                 if device == "cpu" and name == "sdxl_controlnet" else ""),
          file=sys.stderr)
    seg_name = cfg.segmenter
    item = PipelineItem(image, [tuple(b) for b in args.boxes], labels, args.description, args.seed, options)
    outcome = run_pipeline([item], segmenter=segmenter, synthesizer=synthesizer, mask_threshold=cfg.mask_threshold,
                           min_foreground_fraction=cfg.min_foreground_fraction,
                           min_label_coverage=cfg.min_label_coverage,
                           max_label_edge_gap=cfg.max_label_edge_gap,
                           label_segmenter=(None if cfg.label_segmenter is None else
                                            _build(registry, "segmenters", cfg.label_segmenter,
                                                   cfg.label_segmenter_options, device)),
                           min_label_object_coverage=cfg.min_label_object_coverage)[0]
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


#: the server-config keys one-image ``syngrpo synth`` reads (it runs the pipeline in this process: no port, no
#: queue, no store); a ``--set`` of any other key would be silently ignored, so it is refused
ONE_IMAGE_KEYS = ("synthesizer", "synthesizer_options", "extra_synthesizers", "segmenter", "segmenter_options",
                  "plugins", "workers", "mask_threshold", "min_foreground_fraction", "min_label_coverage")


def one_image_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` items of one-image mode, with ``--synthesizer`` / ``--segmenter`` as overrides in front.

    ``--synthesizer X`` is ``--set synthesizer=X``: the ``--set synthesizer_options...`` that follow are X's.
    When X is not the config file's synthesizer, the file's ``synthesizer_options`` (the other one's) give
    way to X's own under ``extra_synthesizers`` or to none; ``--segmenter`` likewise. Keys this mode does not
    read are refused, naming the ones it does.
    """
    from syngrpo.config.io import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.synthesis.server.config import ServerConfig

    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key.split(".", 1)[0] not in ONE_IMAGE_KEYS:
            raise ConfigError(f"--set {item}: one-image `syngrpo synth` runs the pipeline in this process and does "
                              f"not use {key.split('.', 1)[0]!r} (a server setting); it reads "
                              f"{', '.join(ONE_IMAGE_KEYS)}")
    front: list[str] = []
    base = load_config(ServerConfig, args.config)
    for kind, chosen in (("synthesizer", args.synthesizer), ("segmenter", args.segmenter)):
        if chosen and chosen != getattr(base, kind):
            own = base.extra_synthesizers.get(chosen, {}) if kind == "synthesizer" else {}
            front += [f"{kind}={chosen}", f"{kind}_options={json.dumps(own)}"]
    return front + list(args.overrides)


def _build(registry: Any, kind: str, name: str, options: dict[str, Any], device: str) -> Any:
    """A segmenter or synthesizer for one-image mode; its failure (weights that are not there, a hub that cannot
    be reached, an unknown option) is one clear error naming the plugin and its options, not a traceback."""
    from syngrpo.errors import ConfigError, SyngrpoError
    from syngrpo.synthesis.server.calls import make_plugin

    try:
        return make_plugin(registry, kind, name, options, device)
    except SyngrpoError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a plugin's loading, said once
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (" (a local directory needs local_files_only: true; the tiny model: `syngrpo make-tiny --what sdxl "
                "--out DIR`, then --set synthesizer_options.model=DIR/sdxl --set synthesizer_options.controlnet=null)"
                if name == "sdxl_controlnet" else "")
        raise ConfigError(f"{kind[:-1]} {name!r} with options {json.dumps(options)} did not load: "
                          f"{type(exc).__name__}: {first}{hint}") from None


def _cpu_hint(name: str, options: dict[str, Any], job: dict[str, Any]) -> str:
    """What one image costs at these settings on a CPU, and the cheaper ones (docs/data-server.md, "On a CPU")."""
    size = int(job.get("size", options.get("size", 1024)))
    steps = int(job.get("steps", options.get("steps", 30)))
    text = f"size {size}, {steps} steps"
    if size > 256 or steps > 8:
        text += (" (on a CPU this takes minutes per image even for the tiny model; --options "
                 "'{\"size\": 256, \"steps\": 4}' takes seconds: docs/data-server.md, \"On a CPU\")")
    return text


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
