"""Tiny real models for the model-side tests: one tiny Qwen2.5-VL built per session, loaded as needed."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine run ~40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL (seed 0) written once for the whole session."""
    from syngrpo.models.tiny_policy import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("tiny-policy"), seed=0)


@pytest.fixture(scope="session")
def policy(tiny_policy_dir):
    """The tiny policy, loaded once; tests that train must use ``fresh_policy`` instead."""
    from syngrpo.models.policy import load_policy

    return load_policy(tiny_policy_dir)


@pytest.fixture
def fresh_policy(tiny_policy_dir):
    """A private copy of the tiny policy that a test may train."""
    from syngrpo.models.policy import load_policy

    return load_policy(tiny_policy_dir)


@pytest.fixture(scope="session")
def two_images():
    """Two images of different sizes (so their prompts differ in length and one is left-padded)."""
    from PIL import Image, ImageDraw

    a = Image.new("RGB", (112, 112), (230, 230, 225))
    ImageDraw.Draw(a).ellipse([20, 30, 60, 70], fill=(220, 40, 40))
    b = Image.new("RGB", (200, 150), (210, 215, 220))
    ImageDraw.Draw(b).rectangle([120, 20, 180, 90], fill=(40, 90, 230))
    return [a, b]


@pytest.fixture(scope="session")
def two_prompts(policy, two_images):
    from syngrpo.models.policy import encode_prompts

    return encode_prompts(policy, two_images, ["Locate the red circle.", "Locate the blue square on the right."])


@pytest.fixture
def vllm_standin(monkeypatch):
    """The vLLM stand-in (``standin_vllm.py``, a test double named so: vLLM needs CUDA) installed as ``vllm``,
    outside a torchrun launch."""
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import standin_vllm

    mod = standin_vllm.install(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return mod
