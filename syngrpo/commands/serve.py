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
    p.add_argument("--backend", help="who runs the workers: local (default: processes of this server) or a server "
                   "backend plugin, e.g. ray (replicas on a Ray cluster; extra 'ray'); the config's backend key")
    p.add_argument("--read-only", action="store_true",
                   help="serve the live page over an existing store (--data-dir, e.g. a finished run's server/ "
                        "folder): no worker, nothing written, the store's lock not taken")
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
    if getattr(args, "backend", None) is not None:
        cfg.backend = args.backend
    return cfg.with_env_token()


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from syngrpo.errors import ConfigError
    from syngrpo.synthesis.server.runner import serve

    try:
        cfg = load_server_config(args)
    except ValidationError as exc:  # a bad --host/--port value
        raise ConfigError(f"invalid server option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    if args.read_only:
        from syngrpo.synthesis.server.readonly import create_readonly_app

        app = create_readonly_app(cfg.data_dir, cfg.token)  # a folder that is no store: a clear error now
        serve(cfg, ready_file=args.ready_file, parent_pid=args.parent_pid, app_factory=lambda: app)
        return 0
    if cfg.backend != "local":
        run_backend(cfg, ready_file=args.ready_file, parent_pid=args.parent_pid)
        return 0
    serve(cfg, ready_file=args.ready_file, parent_pid=args.parent_pid)
    return 0


def run_backend(cfg, *, ready_file, parent_pid) -> None:
    """``backend: NAME``: the server backend plugin of that name runs the server (``register_server_backends``)."""
    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.server.calls import load_plugin_modules

    registry = get_registry(load_plugin_modules(cfg.plugins)) if cfg.plugins else get_registry()
    backend = registry.get("server_backends", cfg.backend)  # unknown: lists the installed ones and the extra
    backend.factory(cfg, ready_file=ready_file, parent_pid=parent_pid)
