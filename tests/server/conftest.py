"""Fixtures of the data-server tests (helpers live in support.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from syngrpo.plugins import Registry, get_registry
from syngrpo.synthesis.server.config import ServerConfig

from .support import Control, ControlledPlugin


@pytest.fixture
def control():
    c = Control()
    yield c
    c.gate.set()
    c.release.set()  # let hung test threads end


@pytest.fixture
def registry(control) -> Registry:
    return get_registry([ControlledPlugin(control)])


@pytest.fixture
def config_for(tmp_path):
    """``config_for(**keys)``: a ServerConfig with its own data dir under tmp_path."""
    counter = iter(range(1000))

    def make(**keys: Any) -> ServerConfig:
        keys.setdefault("data_dir", tmp_path / f"data-{next(counter)}")
        return ServerConfig(**keys)

    return make


@dataclass
class Served:
    """A server started as ``syngrpo serve`` starts it (:func:`~syngrpo.synthesis.server.runner.start_site`)."""

    app: web.Application
    host: str
    port: int
    session: aiohttp.ClientSession  # with base_url: ``await served.session.get("/healthz")``

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
async def serve():
    """``await serve(config, registry=None)``: the app on a free port of 127.0.0.1 behind the production
    connection handler (the connection cap, parser refusals in JSON), unlike ``aiohttp_client``'s test server."""
    from syngrpo.synthesis.server.app import create_app
    from syngrpo.synthesis.server.runner import start_site

    started: list[tuple[web.AppRunner, aiohttp.ClientSession]] = []

    async def start(config: ServerConfig, registry: Registry | None = None) -> Served:
        config = config.model_copy(update={"host": "127.0.0.1", "port": 0})
        app = create_app(config, registry=registry)
        runner, port = await start_site(app, config)
        session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
        started.append((runner, session))
        return Served(app, "127.0.0.1", port, session)

    yield start
    for runner, session in started:
        await session.close()
        await runner.cleanup()


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """A tiny random SDXL ControlNet inpaint pipeline, built once per session."""
    pytest.importorskip("diffusers", reason="diffusers is not installed (extra 'sdxl')")
    from syngrpo_sdxl.tiny import build_tiny_sdxl_controlnet

    return build_tiny_sdxl_controlnet(tmp_path_factory.mktemp("tiny-sdxl"), seed=0)


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory):
    """A tiny random transformers SamModel + processor, built once per session."""
    from syngrpo_sam.tiny import build_tiny_sam

    return build_tiny_sam(tmp_path_factory.mktemp("tiny-sam"), seed=0)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a module's tiny torch models on one intra-op thread, then restore the setting.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads
    oversubscribe: the tiny SDXL batch test took 17 s with 2 threads and under 1 s with one.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
