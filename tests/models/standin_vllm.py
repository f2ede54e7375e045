"""A stand-in for the ``vllm`` package (CUDA only, not installable here) that records what it receives.

Tests put it into ``sys.modules["vllm"]`` (:func:`install`) and then drive the real
``VLLMRolloutEngine`` against it.  It implements just the surface the engine uses:
``LLM(model=..., **kwargs)`` with ``generate``, ``apply_model``, ``sleep``, ``wake_up`` and
``reset_prefix_cache``, and ``SamplingParams(**kwargs)``.  ``generate`` samples random token ids
from the model's vocabulary, honouring ``logit_bias`` as a sampler would (a bias of -100 or
less removes the token) and ``stop_token_ids``.  Every call lands in ``LLM.calls`` in order;
``load_weights`` batches land in ``LLM.loaded``.  Tests whose behaviour rests on it say so
in their names (``..._with_standin_vllm``).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any


class SamplingParams:
    """Keeps its keyword arguments (and exposes them as attributes)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        for k, v in kwargs.items():
            setattr(self, k, v)


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str
    logprobs: Any = None


@dataclass
class RequestOutput:
    outputs: list[Completion] = field(default_factory=list)


class _Model:
    """What ``apply_model`` hands to the function: records ``load_weights`` batches."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def load_weights(self, weights):
        batch = [(name, tensor.detach().clone()) for name, tensor in weights]
        self.llm.loaded.append(batch)
        self.llm.calls.append(("load_weights", [n for n, _ in batch]))
        if self.llm.on_load is not None:
            self.llm.on_load(batch)


class LLM:
    instances: list[LLM] = []
    #: token ids generate draws from (tests set it to the tokenizer's size)
    vocab_size: int = 64

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model = model
        self.kwargs = kwargs
        self.calls: list[tuple[str, Any]] = [("init", kwargs)]
        self.loaded: list[list[tuple[str, Any]]] = []
        self.on_load = None
        self.on_call = None
        LLM.instances.append(self)

    def _note(self, name: str, detail: Any = None) -> None:
        self.calls.append((name, detail))
        if self.on_call is not None:
            self.on_call(name, detail)

    def generate(self, requests, params: SamplingParams, use_tqdm: bool = True):
        import torch

        self._note("generate", params)
        vocab = self.vocab_size
        bias = getattr(params, "logit_bias", None) or {}
        allowed = [t for t in range(vocab) if bias.get(t, 0.0) > -100.0]
        stops = list(getattr(params, "stop_token_ids", None) or [])
        gen = torch.Generator().manual_seed(int(getattr(params, "seed", None) or 0))
        out = []
        for _ in requests:
            completions = []
            for _ in range(int(params.n)):
                n = int(torch.randint(1, int(params.max_tokens) + 1, (1,), generator=gen))
                ids = [allowed[int(i)] for i in torch.randint(0, len(allowed), (n,), generator=gen)]
                finish = "length"
                for j, t in enumerate(ids):
                    if t in stops:
                        ids, finish = ids[: j + 1], "stop"
                        break
                completions.append(Completion(token_ids=ids, finish_reason=finish))
            out.append(RequestOutput(completions))
        return out

    def apply_model(self, fn):
        return [fn(_Model(self))]

    def sleep(self, level: int = 1) -> None:
        self._note("sleep", level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        self._note("wake_up", tags)

    def reset_prefix_cache(self) -> None:
        self._note("reset_prefix_cache")


def install(monkeypatch=None) -> types.ModuleType:
    """Put the stand-in into ``sys.modules['vllm']`` (undone by ``monkeypatch`` when given)."""
    mod = types.ModuleType("vllm")
    mod.LLM = LLM
    mod.SamplingParams = SamplingParams
    mod.__standin__ = True
    LLM.instances = []
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, "vllm", mod)
    else:
        sys.modules["vllm"] = mod
    return mod
