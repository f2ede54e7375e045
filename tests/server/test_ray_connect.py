"""How a training run reaches a Ray-backed data server (issue 28), checked before anything starts.

Two ways, each one config key:

* the run **spawns** ``syngrpo serve`` with ``synthesis.server.backend: ray`` (the quickstart's way): the trainer
  talks HTTP to its front, like to any spawned server; ``backend_options.address`` names an existing cluster;
* the run **reaches a running** ``syngrpo serve --backend ray`` with ``synthesis.transport: ray``: the transport
  finds the coordinator by name on the cluster (``transport_options.address``), so the run needs no URL.  A
  transport says so itself (``factory.finds_server = True``); the core never tests a transport's name.

``syngrpo check`` catches a misspelt backend or backend option before a server is spawned.  No Ray cluster here:
the transport stand-in records the options it was built with; the real one is run in test_ray_backend.py.
"""

from __future__ import annotations

import pytest

from syngrpo.config import load_train_config
from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import get_registry
from syngrpo.synthesis.connect import connect, spawned_server_config
from syngrpo.testing import registry_with
from syngrpo.train.preflight import check_config


class FindingTransport:
    """A stand-in for a transport that locates its server by its own options (as ``ray`` does)."""

    def __init__(self, **options):
        self.options = options

    def close(self):
        pass


def finding_transport(*, name: str = "coordinator"):
    return FindingTransport(name=name)


finding_transport.finds_server = True  # the declaration the core reads


class FindingPlugin:
    @hookimpl
    def register_transports(self, register):
        register("finding", finding_transport, description="test: finds its data server by name")


@pytest.fixture(scope="module")
def registry():
    return registry_with(FindingPlugin(), autoload=True)


def _cfg(*sets: str):
    return load_train_config(None, ["data.task=rec", "synthesis.mode=async", *sets])


def _synthesis_errors(cfg, registry) -> list[str]:
    return [e for e in check_config(cfg, registry, data=False).errors if "synthesis" in e or "backend" in e]


def test_a_transport_that_finds_its_server_needs_no_url_and_is_given_none(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNGRPO_SERVER_TOKEN", "a-token-of-the-environment")
    cfg = _cfg("synthesis.transport=finding", "synthesis.transport_options={name: train-7}")
    assert _synthesis_errors(cfg, registry) == []
    link = connect(cfg.synthesis, registry, server_dir=tmp_path / "server")
    try:
        assert link.transport.options == {"name": "train-7"} and link.server is None  # no urls, no token
    finally:
        link.close()


def test_spawning_a_server_for_a_transport_that_finds_its_own_is_a_clear_error(registry, tmp_path):
    cfg = _cfg("synthesis.transport=finding", "synthesis.spawn_server=true")
    with pytest.raises(ConfigError, match="spawn_server") as err:
        connect(cfg.synthesis, registry, server_dir=tmp_path / "server")
    assert "synthesis.server.backend" in str(err.value)  # says what to write instead
    assert not (tmp_path / "server").exists()  # nothing was started
    assert any("spawn_server" in e for e in _synthesis_errors(cfg, registry))


def test_the_ray_transport_declares_that_it_finds_its_server_and_its_options_are_checked():
    pytest.importorskip("syngrpo_ray", reason="the ray plugin is not installed")
    registry = get_registry()
    assert getattr(registry.get("transports", "ray").factory, "finds_server", False) is True
    good = _cfg("synthesis.transport=ray", "synthesis.transport_options={address: '10.0.0.1:6379', name: syn}")
    assert _synthesis_errors(good, registry) == []
    typo = _cfg("synthesis.transport=ray", "synthesis.transport_options={adress: '10.0.0.1:6379'}")
    assert any("adress" in e for e in _synthesis_errors(typo, registry))


def test_a_spawned_ray_server_is_checked_before_it_is_started():
    """The quickstart's key (``synthesis.server.backend: ray``): a misspelt backend or backend option is a
    pre-flight error naming it, not a server that dies at start with a log to read."""
    pytest.importorskip("syngrpo_ray", reason="the ray plugin is not installed")
    registry = get_registry()
    fine = _cfg("synthesis.spawn_server=true",
                "synthesis.server={backend: ray, backend_options: {address: '127.0.0.1:6379', max_replicas: 2}}")
    assert spawned_server_config(fine.synthesis).backend_options["max_replicas"] == 2
    assert _synthesis_errors(fine, registry) == []
    unknown = _cfg("synthesis.spawn_server=true", "synthesis.server={backend: rayy}")
    errors = _synthesis_errors(unknown, registry)
    assert any("rayy" in e and "ray" in e.replace("rayy", "") for e in errors), errors  # lists the installed ones
    typo = _cfg("synthesis.spawn_server=true", "synthesis.server={backend: ray, backend_options: {max_replica: 2}}")
    assert any("max_replica" in e for e in _synthesis_errors(typo, registry))
    bounds = _cfg("synthesis.spawn_server=true",
                  "synthesis.server={backend: ray, backend_options: {min_replicas: 3, max_replicas: 2}}")
    assert any("min_replicas" in e for e in _synthesis_errors(bounds, registry))
