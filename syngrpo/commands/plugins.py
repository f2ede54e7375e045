"""``syngrpo plugins``: what is installed, of every kind, and which distribution provides it."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed plugins (tasks, rewards, synthesizers, ...)")
    p.add_argument("--json", action="store_true", help="print a JSON object keyed by plugin kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.plugins import KINDS, get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps(registry.as_json(), indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "PLUGIN", "DESCRIPTION")]
    for kind in KINDS:
        for entry in registry.as_json()[kind]:
            dist = f"{entry['distribution']} {entry['version']}".strip()
            rows.append((kind, entry["name"], dist, entry["plugin"], entry["description"][:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0
