"""``syngrpo new-plugin NAME [--kind task|synthesizer|reward] [--out DIR]``: start a plugin package."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from syngrpo.authoring.scaffold import KINDS

    p = sub.add_parser(
        "new-plugin",
        help="write a new plugin package (task, synthesizer or reward) with its tests",
        description="Write a plugin package that installs (pip install -e DIR), is listed by `syngrpo plugins` "
                    "and passes its own tests. See docs/extending.md.",
    )
    p.add_argument("name", help="the plugin's name, e.g. 'demo' (package syngrpo_demo, distribution syngrpo-demo)")
    p.add_argument("--kind", choices=KINDS, default="task", help="what the plugin adds (default: task)")
    p.add_argument("--out", default=None, help="directory to write (default: ./NAME); must not exist or be empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syngrpo.authoring.scaffold import new_plugin, plugin_names

    root = new_plugin(args.name, kind=args.kind, out=args.out)
    dist, package = plugin_names(args.name)
    print(f"wrote the {args.kind} plugin {args.name!r} ({dist}, package {package}) into {root}/\n"
          f"next:  pip install -e {root}  &&  syngrpo plugins  &&  (cd {root} && python -m pytest)")
    return 0
