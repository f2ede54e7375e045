"""Entry-point module of the ``vllm`` rollout engine; vLLM itself is imported only when the engine is built."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def vllm_engine(**options):
    """vLLM sampling with the policy's weights synced after each update (GPU; extra ``vllm``)."""
    from syngrpo.errors import require

    require("vllm", extra="vllm", what="the vllm rollout engine",
            hint="CUDA only; it pins its own torch and transformers versions")
    from syngrpo_vllm.engine import VLLMRolloutEngine

    return VLLMRolloutEngine(**options)


@hookimpl
def register_rollout_engines(register):
    register("vllm", vllm_engine,
             description="vLLM sampling, weights synced after each update (GPU; pip install 'syngrpo[vllm]')")
