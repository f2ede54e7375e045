"""``syngrpo serve``: run the data server (paper §3.3.1) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the data server that synthesizes new training images",
        description="Run the data server. With no config it serves the CPU defaults (procedural synthesizer, "
                    "box segmenter) on 127.0.0.1:8765. See docs/data-server.md.",
    )
    p.add_argument("-c", "--config", help="server config YAML (configs/server_cpu.yaml, configs/server_sdxl_ben2.yaml)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, help="TCP port (0 picks a free one)")
    p.add_argument("--data-dir", help="where the job database and images live")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set workers=[cuda:0,cuda:1]")
    p.add_argument("--ready-file", help="write {url, host, port, pid} as JSON here once listening")
    p.add_argument("--parent-pid", type=int, help="stop when this process dies (a server spawned by a trainer)")
    p.set_defaults(func=run)


def load_server_config(args: argparse.Namespace):
    """The config from file + ``--set`` + the explicit flags + ``$SYNGRPO_SERVER_TOKEN``."""
    from syngrpo.config.io import load_config
    from syngrpo.synthesis.server.config import ServerConfig

    overrides = list(args.overrides or [])
    cfg = load_config(ServerConfig, args.config, overrides)
    if args.host is not None:
        cfg.host = args.host
    if args.port is not None:
        cfg.port = args.port
    if args.data_dir is not None:
        cfg.data_dir = args.data_dir
    return cfg.with_env_token()


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from syngrpo.errors import ConfigError
    from syngrpo.synthesis.server.runner import serve

    try:
        cfg = load_server_config(args)
    except ValidationError as exc:  # a bad --host/--port value
        raise ConfigError(f"invalid server option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    serve(cfg, ready_file=args.ready_file, parent_pid=args.parent_pid)
    return 0
