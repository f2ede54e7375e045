"""A stand-in rollout engine for benchmark tests: the boundary a test cannot cross is a model that answers
on purpose, so this one answers each prompt with the text a table gives for the first key found in the prompt.

Used as a local plugin file (``plugins: [tests/data/scripted.py]``, ``rollout.engine: scripted_answers``,
``rollout.engine_options: {answers: FILE.json}``) or built directly (``ScriptedAnswers(answers={...})``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from syngrpo.hookspecs import hookimpl
from syngrpo.models.rollout import Rollout


class ScriptedAnswers:
    """Answers ``answers[key]`` for the first ``key`` the prompt contains (``default`` when none), or
    ``answer(prompt_index, batch)`` when given a callable."""

    name = "scripted_answers"

    def __init__(self, bundle: Any = None, answers: Any = None, default: str = "", answer: Any = None) -> None:
        if isinstance(answers, (str, Path)):
            answers = json.loads(Path(answers).read_text(encoding="utf-8"))
        self.answers: dict[str, str] = dict(answers or {})
        self.default = default
        self.answer = answer
        self.prompts: list[str] = []
        self.calls: list[dict[str, Any]] = []

    def generate(self, bundle, batch, *, num_generations, temperature, top_p, max_new_tokens, generator_seed=None):
        self.calls.append({"n": batch.num_prompts, "temperature": temperature, "num_generations": num_generations,
                           "max_new_tokens": max_new_tokens})
        texts = []
        for i in range(batch.num_prompts):
            prompt = batch.prompts[i]
            self.prompts.append(prompt)
            if self.answer is not None:
                texts.append(self.answer(i, batch))
            else:
                texts.append(next((v for k, v in self.answers.items() if k in prompt), self.default))
        ids = torch.full((len(texts), 1), bundle.eos_token_ids[0])
        return Rollout(completion_ids=ids, completion_mask=torch.ones_like(ids), texts=texts,
                       prompt_index=torch.arange(len(texts)), batch=batch.collapse().expand(1), group_size=1)

    def sync_weights(self, model: Any) -> None:
        pass

    def close(self) -> None:
        pass


@hookimpl
def register_rollout_engines(register):
    register("scripted_answers", lambda bundle=None, **options: ScriptedAnswers(bundle, **options),
             description="test stand-in: answers from a table keyed by prompt text")
