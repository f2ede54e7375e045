"""The ``policy`` describer: the policy itself writes the descriptions, before training.

It asks the policy exactly what Syn-GRPO asks it during training (the task's question in the
``syn`` response format, :func:`syngrpo.perception.response.build_instruction`), samples ``n`` completions
per image with the ``hf`` rollout engine, and keeps each completion's ``<description>``.  So the
offline baseline can be run without an external model, and "the same describer, offline vs
online" can be compared.  Completions without a usable description are dropped (a policy never
trained on the format writes few).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syngrpo.synthesis.describers import DescribeRequest


class PolicyDescriber:
    """Samples the policy's ``<description>`` for each image (see the module docstring)."""

    def __init__(self, *, policy: str, device: str = "cpu", dtype: str = "auto", temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 4) -> None:
        from syngrpo.models.policy import load_policy
        from syngrpo.plugins import get_registry

        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.bundle = load_policy(policy, device=device, dtype=dtype)  # type: ignore[arg-type]
        self.engine = get_registry().create("rollout_engines", "hf", bundle=self.bundle)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)

    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[str]]:
        import torch

        from syngrpo.algo.diversity import usable_description
        from syngrpo.models.policy import encode_prompts
        from syngrpo.perception.response import build_instruction, parse_response

        out: list[list[str]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = list(requests[start : start + self.batch_size])
            n = max(1, max(r.n for r in chunk))
            prompts = encode_prompts(self.bundle, [r.image for r in chunk],
                                     [build_instruction(r.question, "syn") for r in chunk])
            with torch.no_grad():
                rollout = self.engine.generate(self.bundle, prompts, num_generations=n, temperature=self.temperature,
                                               top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                                               generator_seed=chunk[0].seed + start)
            for b, req in enumerate(chunk):
                found: list[str] = []
                for text in rollout.texts[b * n : (b + 1) * n]:
                    d = parse_response(text, "syn").description
                    if usable_description(d) and d.strip() not in found:  # type: ignore[union-attr]
                        found.append(d.strip())  # type: ignore[union-attr]
                out.append(found[: req.n])
        return out

    def close(self) -> Any:
        self.engine.close()
