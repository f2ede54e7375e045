"""Step 6 of the trainer: one policy update on a step's rollouts (the loss of eq. 1's advantages).

For the B prompts x G completions of a step:

1. the prompts are split into ``optim.grad_accum`` micro-batches (a prompt's G rows stay together, so
   shared-prefix scoring encodes each prompt once);
2. without gradients: the completions' log-probs under the policy as sampled (the "old" policy, only
   when ``algorithm.updates_per_batch`` > 1; else the ratio is exactly 1) and under the reference model
   (the KL term, when ``algorithm.beta`` > 0);
3. per update, per micro-batch: the log-probs and entropies under the policy being trained, the
   registered policy loss (clipped surrogate + beta KL, or an entropy baseline) on the rows the
   estimator keeps, and backward weighted so that the micro-batches sum to the loss of the whole batch;
   gradients are averaged over ranks once, with the last micro-batch;
4. gradient clipping and one optimizer step per update (float32 masters; :mod:`syngrpo.scale.precision`),
   then one step of the LR schedule.

On the way it measures H(q) (the mean token entropy per response, §3.2) and the largest gap between
the log-probs the rollout engine sampled with and those the loss uses (a check of the multimodal
positions; ``logprob/engine_max_abs_diff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from syngrpo.algo import grpo
from syngrpo.models.rollout import Rollout
from syngrpo.models.scoring import completion_logprobs
from syngrpo.scale.parallel import Parallel
from syngrpo.scale.precision import Precision


@dataclass
class UpdateStats:
    """What one update measured."""

    #: the policy loss's statistics (``loss``, ``policy_loss``, ``kl``, ``clip_frac`` ...), averaged over updates
    stats: dict[str, float]
    #: H(q) of §3.2: per-response mean token entropy, averaged over the batch (last update)
    entropy: float
    #: global gradient norm before clipping (last update)
    grad_norm: float
    #: largest |engine log-prob - policy log-prob| over the completion tokens, when the engine returned them
    engine_gap: float | None


def split_contiguous(items: list[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous chunks of near-equal size (the first ones one longer)."""
    k, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + k + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


class PolicyUpdate:
    """The update of the module doc, over the components :func:`syngrpo.train.components.build_update` wires.

    ``model`` is the policy as the strategy holds it (itself, DDP, or FSDP shards: what gradients flow
    through); ``policy`` the module it wraps (scored without gradients as the old policy).
    """

    def __init__(self, *, model: Any, policy: Any, ref_model: Any | None, optimizer: Any, scheduler: Any,
                 trainable: Sequence[Any], policy_loss: Any, precision: Precision, par: Parallel, shared_prefix: bool,
                 grad_accum: int, updates_per_batch: int, aggregation: str, max_grad_norm: float | None,
                 temperature: float) -> None:
        self.model = model
        self.policy = policy
        self.ref_model = ref_model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.trainable = list(trainable)
        self.policy_loss = policy_loss
        self.precision = precision
        self.par = par
        self.shared_prefix = shared_prefix
        self.grad_accum = grad_accum
        self.updates_per_batch = updates_per_batch
        self.aggregation = aggregation
        self.max_grad_norm = max_grad_norm
        self.temperature = temperature

    def _score(self, model: Any, rollout: Rollout, prompt_ids: list[int], *,
               entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None, list[int], int]:
        """(log-probs, entropies, rows, T) of the completions of prompts ``prompt_ids`` under ``model``."""
        G = rollout.group_size
        rows = [p * G + j for p in prompt_ids for j in range(G)]
        cmask = rollout.completion_mask[rows]
        T = max(1, int(cmask.sum(-1).max()))  # trim the padding every row of this chunk has
        ids, cmask = rollout.completion_ids[rows][:, :T], cmask[:, :T]
        with self.precision.autocast():  # bf16 compute on float32 masters (precision.py)
            logp, ent = completion_logprobs(model, rollout.batch.select_prompts(prompt_ids), ids, cmask, group_size=G,
                                            shared_prefix=self.shared_prefix, with_entropy=entropy,
                                            temperature=self.temperature)
        return logp, ent, rows, T

    def __call__(self, rollout: Rollout, advantages: torch.Tensor, keep: torch.Tensor) -> UpdateStats:
        """Update the policy on ``rollout`` with per-row ``advantages`` (N,) on the rows ``keep`` (N,) marks."""
        G = rollout.group_size
        B = len(rollout.texts) // G
        completion_mask = rollout.completion_mask  # (N, T)
        loss_mask = completion_mask * keep.to(completion_mask.device, completion_mask.dtype).unsqueeze(1)  # (N, T)
        self.model.train()
        chunks = [c for c in split_contiguous(list(range(B)), self.grad_accum) if c]
        total_rows, total_tokens = B * G, float(loss_mask.sum().clamp(min=1))

        old_logps: list[Any] = [None] * len(chunks)
        ref_logps: list[Any] = [None] * len(chunks)
        with torch.no_grad():
            for c, prompt_ids in enumerate(chunks):
                if self.updates_per_batch > 1:
                    old_logps[c] = self._score(self.policy, rollout, prompt_ids, entropy=False)[0]
                if self.ref_model is not None:
                    ref_logps[c] = self._score(self.ref_model, rollout, prompt_ids, entropy=False)[0]

        stats_sum: dict[str, float] = {}
        entropy_sum, grad_norm, engine_gap = 0.0, 0.0, None
        for update in range(self.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            entropy_sum = 0.0
            for c, prompt_ids in enumerate(chunks):
                # under torchrun the gradients are averaged over ranks once, with the last micro-batch
                with self.par.grad_sync(self.model, c == len(chunks) - 1):
                    logp, ent, rows, T = self._score(self.model, rollout, prompt_ids, entropy=True)
                    if not self.policy_loss.entropy_needs_grad:
                        ent = ent.detach()  # frees the entropy's graph now
                    mask = loss_mask[rows][:, :T]
                    loss, stats = self.policy_loss(
                        logp=logp, old_logp=old_logps[c], ref_logp=ref_logps[c],
                        advantages=advantages[rows].to(logp.device), mask=mask, entropy=ent,
                    )
                    # micro-batches weighted so that their sum is the loss of the whole batch
                    weight = (float(mask.sum()) / total_tokens if self.aggregation == "token_mean"
                              else len(rows) / total_rows)
                    self.precision.backward(loss * weight)
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + weight * float(v)
                # H(q) of §3.2: per-response mean token entropy, averaged over the batch
                entropy_sum += float(grpo.aggregate(ent.detach(), completion_mask[rows][:, :T], "sequence_mean")) \
                    * len(rows) / total_rows
                if update == 0 and rollout.logprobs is not None:
                    # the sampler's log-probs vs the ones the loss uses (the multimodal-position check)
                    gap = float(((logp.detach() - rollout.logprobs[rows][:, :T].to(logp.device)).abs()
                                 * completion_mask[rows][:, :T].to(logp.device)).max())
                    engine_gap = gap if engine_gap is None else max(engine_gap, gap)
            grad_norm = self.precision.clip_and_step(self.optimizer, self.trainable, self.max_grad_norm)
        self.scheduler.step()
        return UpdateStats(stats={k: v / self.updates_per_batch for k, v in stats_sum.items()},
                           entropy=entropy_sum, grad_norm=grad_norm, engine_gap=engine_gap)
