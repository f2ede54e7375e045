"""Fixtures of the data-server tests (helpers live in support.py)."""

from __future__ import annotations

from typing import Any

import pytest

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
