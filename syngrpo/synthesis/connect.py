"""A run's link to its data server: the one place that turns the ``synthesis`` section into a transport.

The trainer and offline generation both call :func:`connect`, and pre-flight (``syngrpo check``) asks the
same functions what the run would connect to.  What is decided here, once:

- **the token**: ``synthesis.token``, else the file ``synthesis.token_file`` names, else ``$SYNGRPO_SERVER_TOKEN``,
  checked by the server's own rule
  (:func:`~syngrpo.synthesis.server.config.resolve_token`), whatever its source;
- **the servers**: ``synthesis.servers``, or the one server the run starts itself (``spawn_server``);
- **in process or not**: a transport plugin whose factory declares ``in_process = True`` (the built-in
  ``inprocess`` does) runs the data server inside this process; it needs neither URL nor token, and its
  options are the server's config keys (:func:`is_in_process`);
- **found by the transport**: a transport whose factory declares ``finds_server = True`` (``ray``: a
  coordinator looked up by name on a Ray cluster) locates a server that already runs from its own
  options; it is given neither URL nor token, and a run cannot spawn a server for it (a spawned server,
  whatever its ``backend``, is reached over HTTP).  The core never tests a transport's name.

The spawned server's config is **one object**: the file ``synthesis.server_config`` with the keys of
``synthesis.server`` over it, on loopback, a free port and the run's own store, validated by the
server's own :class:`~syngrpo.synthesis.server.config.ServerConfig` (:func:`spawned_server_config`).  It is
written as JSON into the server's folder and the child reads that file (``syngrpo serve -c``); the token
travels in the child's environment, never in a file or on a command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syngrpo.config import SynthesisConfig
from syngrpo.config.io import load_layered, validate
from syngrpo.errors import ConfigError
from syngrpo.synthesis.server.config import ServerConfig, resolve_token
from syngrpo.synthesis.server.spawn import SupervisedServer, start_supervised_server

#: the file the spawned server's config is written to, in its data folder
SPAWNED_CONFIG = "server_config.json"


def declares_in_process(factory: Any) -> bool:
    """Whether a transport factory says it runs the data server in this process (``factory.in_process``)."""
    return bool(getattr(factory, "in_process", False))


def is_in_process(registry: Any, transport: str) -> bool:
    """Whether the transport named ``transport`` runs the data server in this process (see the module doc)."""
    return declares_in_process(registry.get("transports", transport).factory)


def declares_finds_server(factory: Any) -> bool:
    """Whether a transport factory says it locates a running data server from its own options (``factory.finds_server``)."""
    return bool(getattr(factory, "finds_server", False))


def finds_its_server(registry: Any, transport: str) -> bool:
    """Whether the transport named ``transport`` finds its data server itself (see the module doc)."""
    return declares_finds_server(registry.get("transports", transport).factory)


def names_no_server(s: SynthesisConfig, in_process: bool, finds_server: bool = False) -> bool:
    """Whether ``s`` gives its jobs nowhere to go: no URL, no spawned server, and a transport that needs one."""
    return not in_process and not finds_server and not s.spawn_server and not s.servers


def spawn_conflict(s: SynthesisConfig, transport_finds_server: bool) -> str | None:
    """Why ``s`` cannot run as written when its transport finds a running server and the run spawns one (or None)."""
    if not (transport_finds_server and s.spawn_server):
        return None
    return (f"synthesis.spawn_server: the transport {s.transport!r} finds a data server that already runs (by its "
            "transport_options), and a server the run spawns is reached over HTTP: for synthesis on Ray started by "
            "the run, keep spawn_server and set synthesis.server.backend: ray (transport aiohttp, the default); "
            f"to use {s.transport!r}, set synthesis.spawn_server: false and start `syngrpo serve --backend ray` "
            "on the cluster yourself")


def spawned_server_config(s: SynthesisConfig, data_dir: str | Path | None = None) -> ServerConfig:
    """The config of the server ``spawn_server`` starts: ``server_config`` with ``server`` over it, validated.

    It listens on 127.0.0.1 on a free port; ``data_dir`` (the run's ``server/`` folder) holds its store.
    A key of ``synthesis.server`` replaces the file's value of that key.
    """
    data: dict[str, Any] = load_layered(s.server_config)[0] if s.server_config else {}
    data = {**data, **s.server, "host": "127.0.0.1", "port": 0}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    where = "synthesis.server" + (f" (over {s.server_config})" if s.server_config else "")
    return validate(ServerConfig, data, source=where)


def spawn_server(s: SynthesisConfig, data_dir: str | Path, token: str | None) -> SupervisedServer:
    """Start the server ``spawn_server`` asks for, bound to this process's life and restarted when it dies.

    Its config (:func:`spawned_server_config`) is written to ``data_dir/server_config.json`` (without the
    token) and read by the child; the token (the server config's own, else the run's) goes in its environment.
    """
    config = spawned_server_config(s, data_dir)
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SPAWNED_CONFIG
    path.write_text(json.dumps(config.model_dump(mode="json", exclude={"token"}), indent=1), encoding="utf-8")
    return start_supervised_server(path, data_dir=folder, host=config.host, token=config.token or token,
                                   startup_timeout_s=s.server_startup_timeout)


@dataclass
class Connection:
    """The transport a run talks through, and the server it started (``None`` unless ``spawn_server``)."""

    transport: Any
    server: SupervisedServer | None = None

    def close(self) -> None:
        """Close the transport, then stop the spawned server."""
        try:
            self.transport.close()
        finally:
            if self.server is not None:
                self.server.stop()
                self.server = None


def connect(s: SynthesisConfig, registry: Any, *, server_dir: str | Path,
            say: Callable[[str], None] = print) -> Connection:
    """The transport ``s`` names, wired to its servers (starting the spawned one in ``server_dir``).

    ``say`` is told where a spawned server listens.  Raises :class:`~syngrpo.errors.ConfigError` for a bad
    token or when ``s`` names no server for a transport that needs one.
    """
    factory = registry.get("transports", s.transport).factory
    in_process, finds = declares_in_process(factory), declares_finds_server(factory)
    if names_no_server(s, in_process, finds):
        raise ConfigError("synthesis.servers: no data server is given; set synthesis.servers (URLs of "
                          "`syngrpo serve`), synthesis.spawn_server: true, or an in-process transport "
                          "(synthesis.transport: inprocess)")
    conflict = spawn_conflict(s, finds)
    if conflict:
        raise ConfigError(conflict)
    options = dict(s.transport_options)
    server = None
    if (not in_process and not finds) or s.spawn_server:
        token = resolve_token(s.configured_token(), "synthesis.token_file" if s.token_file else "synthesis.token")
        urls = list(s.servers)
        if s.spawn_server:
            server = spawn_server(s, server_dir, token)
            urls = [server.url]
            say(f"data server started at {server.url} (log: {server.log_path})")
        if not in_process:
            options.setdefault("urls", urls)
            if token:
                options.setdefault("token", token)
    try:
        return Connection(registry.create("transports", s.transport, **options), server)
    except BaseException:
        if server is not None:
            server.stop()
        raise
