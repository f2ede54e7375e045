"""What a rollout engine returns, and the contract every engine fulfils.

A rollout engine samples G responses per prompt (step 2 of paper §3.3, the
``o_i`` of eq. 1).  Engines are plugins (``register_rollout_engines``): ``hf``
runs transformers ``generate`` on the policy itself, ``vllm`` a vLLM engine
whose weights are synced after each update.  The trainer talks to them only
through :class:`RolloutEngine` and reads only :class:`Rollout`.

Importing this module is cheap (no torch at import time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from syngrpo.models.prompts import PolicyBundle, PromptBatch


@dataclass
class Rollout:
    """G sampled completions for each of B prompts, prompt-major (p0 x G, p1 x G, ...); N = B * G rows."""

    #: (N, T) sampled token ids; positions after the first EOS hold padding
    completion_ids: torch.Tensor
    #: (N, T) 1 up to and including the first EOS (all of a row that never stopped), 0 after
    completion_mask: torch.Tensor
    #: decoded completions, special tokens stripped
    texts: list[str]
    #: (N,) index of each row's prompt in the batch that was rolled out
    prompt_index: torch.Tensor
    #: the prompts expanded to N rows (``batch.group_size == G``), ready for scoring
    batch: PromptBatch
    group_size: int
    #: (N, T) the engine's log-probabilities of the sampled tokens (temperature applied), when it was asked for them
    logprobs: torch.Tensor | None = None
    #: (N,) true where the completion hit ``max_new_tokens`` without an EOS (computed from the mask when omitted)
    truncated: torch.Tensor | None = None

    @property
    def num_prompts(self) -> int:
        return len(self.texts) // self.group_size

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) completion lengths in tokens (EOS included)."""
        return self.completion_mask.sum(-1)

    def __post_init__(self) -> None:
        n = self.completion_ids.shape[0]
        if self.completion_mask.shape != self.completion_ids.shape:
            raise ValueError("completion_mask must have the shape of completion_ids")
        if len(self.texts) != n or self.prompt_index.shape[0] != n or n % self.group_size:
            raise ValueError(f"rollout of {n} rows does not fit {len(self.texts)} texts and group size "
                             f"{self.group_size}")
        if self.truncated is None:
            self.truncated = completion_mask_truncated(self.completion_ids, self.completion_mask)


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples completions for a batch of prompts.  Factories: ``factory(bundle=None, **options)``."""

    name: str

    def generate(
        self,
        bundle: PolicyBundle,
        batch: PromptBatch,
        *,
        num_generations: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        generator_seed: int | None = None,
    ) -> Rollout:
        """G = ``num_generations`` completions per prompt of ``batch`` (not expanded).

        ``temperature`` 0 means greedy decoding; ``generator_seed`` makes the
        sampling reproducible without touching the global RNG.
        """
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from ``model``'s current weights (no-op when it samples the model itself).

        The trainer calls it at the end of setup on every rank (after a warm start or a resume) and after
        every update; under FSDP it is a collective.  An engine may also offer ``set_max_new_tokens(n)``,
        which the trainer calls right after the factory with the longest completion the run asks for.
        """
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, GPU memory)."""
        ...


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """(N, T) long mask: 1 up to and including the first EOS of each row, 0 after it."""
    import torch

    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_token_ids:
        is_eos |= completion_ids == int(e)
    # number of EOS strictly before each position: 0 means "still inside the completion"
    before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()
    return (before == 0).long()


def completion_mask_truncated(
    completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids: Sequence[int] = ()
) -> torch.Tensor:
    """(N,) true where a row never stopped: its mask covers every position and its last token is no EOS."""
    import torch

    full = completion_mask.sum(-1) >= completion_ids.shape[-1]
    if completion_ids.shape[-1] == 0:
        return full
    last = completion_ids[:, -1]
    ends_with_eos = torch.zeros_like(full)
    for e in eos_token_ids:
        ends_with_eos |= last == int(e)
    return full & ~ends_with_eos
