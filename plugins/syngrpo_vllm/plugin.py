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


def plan_memory(arch, inp):
    """What the engine holds per GPU for ``syngrpo plan`` (:func:`syngrpo_vllm.memory.plan_vllm_memory`)."""
    # imported here: this entry-point module loads at every `syngrpo` start, the plan arithmetic only for `plan`
    from syngrpo_vllm.memory import plan_vllm_memory

    return plan_vllm_memory(arch, inp)


vllm_engine.plan_memory = plan_memory  # type: ignore[attr-defined]  (the memory declaration syngrpo plan reads)


@hookimpl
def register_rollout_engines(register):
    register("vllm", vllm_engine,
             description="vLLM sampling, weights synced after each update (GPU; pip install 'syngrpo[vllm]')")
