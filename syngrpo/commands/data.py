"""``syngrpo data``: the datasets the field ships, in the task's own format (docs/data.md).

* ``syngrpo data formats``: the installed dataset formats, their task, where the data comes from, its licence;
* ``syngrpo data convert --from FORMAT IN --out DIR``: one source into ``DIR/<split>.jsonl``;
* ``syngrpo data prepare NAME --from DIR [--out data]``: every split of a downloaded copy into
  ``data/<dataset>/<split>.jsonl``, where ``syngrpo eval --benchmark`` looks for it;
* ``syngrpo data sample FILE... -n 2000 --seed 42 --out FILE``: the paper's training sets ("2,000 random
  samples of RefCOCO/+/g train"), reproducible from the seed; ``--rule shuffled_head`` draws the subset a
  benchmark evaluates (VLM-R1's shuffle-and-keep-the-head), so ``--exclude`` can hold exactly it out.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="convert, lay out and sample the datasets the field ships (RefCOCO, COCO, D3, 3D-FRONT ...)",
        description="Read the formats researchers hold (VLM-R1 JSONL, refer's RefCOCO, COCO instances, D3, LISA, "
                    "3D-FRONT, Hugging Face datasets) into the task's own JSONL. See docs/data.md.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    f = data_sub.add_parser("formats", help="list the installed dataset formats")
    f.set_defaults(func=run_formats)

    c = data_sub.add_parser("convert", help="convert one source into the task's JSONL",
                            description="Read IN with a dataset format and write DIR/<split>.jsonl in the task's "
                                        "own format. Every bad record is listed with its file, record number and fix.")
    c.add_argument("source", metavar="IN", help="the file or folder the format reads")
    c.add_argument("--from", dest="format", required=True, metavar="FORMAT", help="a dataset format (`syngrpo data formats`)")
    c.add_argument("--out", required=True, metavar="DIR", help="where to write <split>.jsonl")
    c.add_argument("--split", help="the split to read where the source holds several (refer: train/val/testA ...)")
    _common(c)
    c.set_defaults(func=run_convert)

    r = data_sub.add_parser("prepare", help="lay out every split of a downloaded dataset under data/",
                            description="Convert every split of a downloaded copy into OUT/<dataset>/<split>.jsonl "
                                        "(the layout `syngrpo eval --benchmark` reads). Nothing is downloaded: "
                                        "docs/data.md says where each dataset comes from and its licence.")
    r.add_argument("name", metavar="NAME", help="a dataset format or preset: refcoco, refcocop, refcocog, vlmr1_rec, "
                                                "lisa, coco_filter, coco, d3, 3dfront ...")
    r.add_argument("--from", dest="source", required=True, metavar="DIR", help="the downloaded copy")
    r.add_argument("--out", default="data", metavar="DIR", help="the data folder (default: data)")
    _common(r)
    r.set_defaults(func=run_prepare)

    s = data_sub.add_parser("sample", help="draw a seeded random subset (the paper's 2,000-sample training sets)",
                            description="Pool the records of the given files, drop those whose id is in the "
                                        "--exclude files, and draw N with random.Random(SEED).sample (or, with "
                                        "--rule shuffled_head, shuffle with SEED and keep the first N: the subset "
                                        "a benchmark such as 3dfront_isr evaluates).")
    s.add_argument("files", nargs="+", metavar="FILE", help="JSON/JSONL files in a task's format")
    s.add_argument("-n", type=int, required=True, help="how many records to draw")
    s.add_argument("--seed", type=int, default=42, help="the seed (default: 42)")
    s.add_argument("--rule", choices=("random_sample", "shuffled_head"), default="random_sample",
                   help="random_sample (the training sets; default) or shuffled_head (a benchmark's test subset)")
    s.add_argument("--exclude", nargs="*", default=[], metavar="FILE", help="files whose record ids are left out")
    s.add_argument("--out", required=True, metavar="FILE", help="the JSONL to write")
    s.set_defaults(func=run_sample)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-root", action="append", default=[], metavar="[DATASET=]DIR",
                   help="where the images are when not where the format looks (prepare: DATASET=DIR per dataset)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a reader option (YAML value), e.g. dataset=refcocog, filter=coco_filter (repeatable)")


def _options(pairs: list[str]) -> dict:
    import yaml

    from syngrpo.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r}: write KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _image_roots(values: list[str]) -> tuple[Path | None, dict[str, Path]]:
    default, per = None, {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and "/" not in name and name:
            per[name] = Path(path).expanduser().absolute()
        else:
            default = Path(value).expanduser().absolute()
    return default, per


def _report(result, out: Path, what: str) -> None:
    print(f"{what}: {len(result.records)} records -> {out}")
    for note in result.notes:
        print(f"  note: {note}")


def run_formats(args: argparse.Namespace) -> int:
    from syngrpo.data.formats import make_format
    from syngrpo.plugins import get_registry

    registry = get_registry()
    for name in registry.names("dataset_formats"):
        reg = registry.get("dataset_formats", name)
        try:
            fmt = make_format(registry, name)
            extra = f" [{fmt.task or 'any task'}]\n    from: {fmt.homepage}\n    licence: {fmt.licence}"
        except Exception as exc:  # noqa: BLE001 - a format whose extra is missing still lists
            extra = f"\n    (cannot be built here: {exc})"
        print(f"{name}: {reg.description}{extra}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from syngrpo.data.formats import read_format, write_converted
    from syngrpo.plugins import get_registry

    root, per = _image_roots(args.image_root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = read_format(get_registry(), args.format, args.source, options=_options(args.option), split=args.split,
                         image_root=root, workdir=out)
    target = write_converted(result, out / f"{args.split or 'records'}.jsonl")
    _report(result, target, f"{args.format} {args.source}")
    print(f"train with it: data.train: {target} (data.image_root: null)")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    import datetime
    import json

    from syngrpo.data.formats import make_format, write_converted
    from syngrpo.errors import ConfigError
    from syngrpo.plugins import get_registry

    source = Path(args.source).expanduser()
    if not source.exists():
        raise ConfigError(f"--from {args.source}: no such folder; download the dataset first (docs/data.md says "
                          "where each one comes from)")
    fmt = make_format(get_registry(), args.name, _options(args.option))
    root, per = _image_roots(args.image_root)
    out = Path(args.out)
    results = {}
    for key, result in fmt.prepare(source, image_root=root, image_roots=per, workdir=out / args.name).items():
        target = write_converted(result, out / f"{key}.jsonl")
        _report(result, target, key)
        results[key] = len(result.records)
    for dataset in sorted({k.split("/")[0] for k in results}):
        (out / dataset / "PREPARED.json").write_text(json.dumps({
            "format": args.name, "source": str(source.absolute()), "options": _options(args.option),
            "splits": {k.split("/", 1)[1]: n for k, n in results.items() if k.split("/")[0] == dataset},
            "homepage": fmt.homepage, "licence": fmt.licence,
            "prepared": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }, indent=1) + "\n", encoding="utf-8")
    print(f"licence: {fmt.licence}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import json
    import os

    from syngrpo.data.files import portable_image_path, read_records, write_jsonl
    from syngrpo.data.subsets import random_sample, shuffled_head
    from syngrpo.errors import ConfigError

    def rebased(path: str) -> list[dict]:
        """The records of a file with relative image paths made absolute (they start at the file's folder)."""
        folder = Path(path).parent
        out = []
        for i, record in enumerate(read_records(path)):
            rec = dict(record)
            rec.setdefault("id", f"{Path(path).stem}-{i}")
            image = rec.get("image")
            if isinstance(image, str) and not os.path.isabs(image):
                rec["image"] = str((folder / image).absolute())
            out.append(rec)
        return out

    for path in args.files + args.exclude:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such file (`syngrpo data prepare` writes data/<dataset>/<split>.jsonl)")
    pool = [r for path in args.files for r in rebased(path)]
    excluded = {str(r["id"]) for path in args.exclude for r in rebased(path)}
    if args.rule == "shuffled_head":
        chosen = shuffled_head([r for r in pool if str(r["id"]) not in excluded], args.n, args.seed)
    else:
        chosen = random_sample(pool, args.n, args.seed, exclude=excluded, key=lambda r: str(r["id"]))
    for rec in chosen:
        if isinstance(rec.get("image"), str):
            rec["image"] = portable_image_path(rec["image"], args.out)
    write_jsonl(chosen, args.out)
    print(f"{len(chosen)} of {len(pool) - sum(1 for r in pool if str(r['id']) in excluded)} records "
          f"({args.rule}, seed {args.seed}{f', {len(excluded)} ids excluded' if excluded else ''}) -> {args.out}")
    print(json.dumps({"files": args.files, "n": args.n, "seed": args.seed, "rule": args.rule,
                      "exclude": args.exclude}))
    return 0
