"""Entry-point module of the ``hf`` rollout engine (transformers ``generate``); imports nothing heavy."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def hf_engine(**options):
    """transformers generate on the policy itself (default; no weight sync needed)."""
    from syngrpo_hf.engine import HFRolloutEngine

    return HFRolloutEngine(**options)


# the class whose keyword options `syngrpo check` matches the config's options against
hf_engine.options_from = "syngrpo_hf.engine:HFRolloutEngine"  # type: ignore[attr-defined]


@hookimpl
def register_rollout_engines(register):
    register("hf", hf_engine, description="transformers generate on the policy itself (default)")
