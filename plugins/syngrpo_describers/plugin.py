"""Entry-point module of the built-in describers; imports nothing heavy."""

from __future__ import annotations

from typing import Any

from syngrpo.hookspecs import hookimpl


def openai_describer(**options: Any):
    """An OpenAI-compatible chat-completions service (GPT-4o in the paper; any vLLM/Ollama server too)."""
    from syngrpo_describers.chat import ChatCompletionsDescriber

    return ChatCompletionsDescriber(**options)


def template_describer(**options: Any):
    """Scene templates filled at random (no model): a cheap, reproducible describer."""
    from syngrpo_describers.template import TemplateDescriber

    return TemplateDescriber(**options)


def policy_describer(**options: Any):
    """The policy itself, asked in Syn-GRPO's response format before training; its <description>s."""
    from syngrpo_describers.policy import PolicyDescriber

    return PolicyDescriber(**options)


@hookimpl
def register_describers(register):
    register("openai", openai_describer,
             description="OpenAI-compatible chat completions (base_url, model; key from an env var)")
    register("template", template_describer, description="scene templates filled at random (no model)")
    register("policy", policy_describer, description="the policy's own <description>s, sampled before training")
