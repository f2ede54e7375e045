"""``syngrpo plugins``: what is installed, of every kind, and which distribution provides it."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed plugins (tasks, rewards, synthesizers, ...)")
    p.add_argument("--json", action="store_true", help="print a JSON object keyed by plugin kind")
    p.add_argument("--wide", action="store_true",
                   help="never cut descriptions (they are cut to the terminal's width only on a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import sys

    from syngrpo.plugins import KINDS, get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps(registry.as_json(), indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "PLUGIN", "DESCRIPTION")]
    for kind in KINDS:
        for entry in registry.as_json()[kind]:
            dist = f"{entry['distribution']} {entry['version']}".strip()
            rows.append((kind, entry["name"], dist, entry["plugin"], entry["description"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    # on a terminal, a description is cut at the screen's edge (at least 30 characters); piped, never
    room = None
    if not args.wide and sys.stdout.isatty():
        room = max(30, shutil.get_terminal_size().columns - sum(widths) - 2 * 4)
    for r in rows:
        description = r[4] if room is None or len(r[4]) <= room else r[4][: room - 1] + "…"
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + description)
    return 0
