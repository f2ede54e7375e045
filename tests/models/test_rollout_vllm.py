"""The ``vllm`` rollout engine registers everywhere and asks for its extra where vLLM is absent."""

from __future__ import annotations

import importlib.util

import pytest

from syngrpo.errors import MissingExtraError
from syngrpo.plugins import get_registry


def test_vllm_engine_is_listed_even_without_vllm():
    assert "vllm" in get_registry().names("rollout_engines")
    assert "vllm" in get_registry().get("rollout_engines", "vllm").description


def test_importing_the_plugin_module_does_not_import_vllm():
    import sys

    import syngrpo_vllm.plugin  # noqa: F401

    assert "vllm" not in sys.modules or importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_creating_the_vllm_engine_without_vllm_names_the_extra():
    with pytest.raises(MissingExtraError) as err:
        get_registry().create("rollout_engines", "vllm")
    assert err.value.extra == "vllm"
    assert "pip install 'syngrpo[vllm]'" in str(err.value)
