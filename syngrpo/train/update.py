"""Step 6 of the trainer: one policy update on a step's rollouts (the loss of eq. 1's advantages).

For the B prompts x G completions of a step:

1. the prompts are split into ``optim.grad_accum`` micro-batches, or by ``optim.token_budget`` (the tokens a
   micro-batch scores; verl's ``use_dynamic_bsz``) (a prompt's G rows stay together, so shared-prefix
   scoring encodes each prompt once); scoring is padded, shared-prefix or packed (``algorithm.packed``);
2. without gradients: the completions' log-probs under the policy as sampled (the "old" policy, only
   when ``algorithm.updates_per_batch`` > 1; else the ratio is exactly 1) and under the reference model
   (the KL term, when ``algorithm.beta`` > 0);
3. per update, per micro-batch: the log-probs and entropies under the policy being trained, the
   registered policy loss (clipped surrogate + beta KL, or an entropy baseline) on the rows the
   estimator keeps, and backward weighted so that the micro-batches sum to the loss of the whole batch;
   gradients are averaged over ranks once, with the last micro-batch;
4. gradient clipping and one optimizer step per update (float32 masters; :mod:`syngrpo.scale.precision`),
   then one step of the LR schedule.

With ``rollout.importance_correction`` on, step 3 also weighs each token's policy term by the trainer /
sampler probability ratio of the rollout's tokens (:mod:`syngrpo.algo.rollout_correction`; TRL's
``vllm_importance_sampling_correction``), computed once per batch at the first update from π_θold: the
old-policy log-probs when there are several updates, the first update's own (detached) otherwise.

On the way it measures H(q) (the mean token entropy per response, §3.2) and the largest gap between
the log-probs the rollout engine sampled with and those the loss uses (a check of the multimodal
positions; ``logprob/engine_max_abs_diff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from syngrpo.algo import grpo
from syngrpo.algo.rollout_correction import CorrectionStats, importance_weights
from syngrpo.errors import ConfigError
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
    #: the rollout correction's metrics (``rollout_is/*``), when it is on
    correction: dict[str, float] = field(default_factory=dict)


def split_by_tokens(n_items: int, cost: Any, budget: int) -> list[list[int]]:
    """``range(n_items)`` in contiguous chunks, each grown while ``cost(chunk)`` stays within ``budget``.

    An item whose cost alone is over the budget is a chunk of its own (it cannot be split: a prompt's G
    rows share the prompt).  ``cost`` takes a list of items, so it may be a padded size, not a sum.
    """
    out: list[list[int]] = []
    for i in range(n_items):
        if out and cost(out[-1] + [i]) <= budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out


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

    def __init__(
        self,
        *,
        model: Any,
        policy: Any,
        ref_model: Any | None,
        optimizer: Any,
        scheduler: Any,
        trainable: Sequence[Any],
        policy_loss: Any,
        precision: Precision,
        par: Parallel,
        shared_prefix: bool,
        grad_accum: int,
        updates_per_batch: int,
        aggregation: str,
        max_grad_norm: float | None,
        temperature: float,
        correction: Any | None = None,
        packed: bool = False,
        token_budget: int | None = None,
    ) -> None:
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
        self.packed = packed
        if token_budget is not None and par.world > 1:
            raise ConfigError(
                "optim.token_budget runs on one process only for now (ranks would run different "
                "numbers of micro-batches and their collectives would not meet): unset it, or use "
                "optim.grad_accum"
            )
        self.token_budget = token_budget
        self.grad_accum = grad_accum
        self.updates_per_batch = updates_per_batch
        self.aggregation = aggregation
        self.max_grad_norm = max_grad_norm
        self.temperature = temperature
        #: ``rollout.importance_correction`` (:class:`~syngrpo.config.ImportanceCorrectionConfig`) when on, else None
        self.correction = correction if correction is not None and correction.enabled else None

    def _score(
        self, model: Any, rollout: Rollout, prompt_ids: list[int], *, entropy: bool, prompts: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int], int]:
        """(log-probs, entropies, rows, T) of the completions of prompts ``prompt_ids`` under ``model``;
        ``prompts``: the rollout's prompts one row per group (:func:`_group_prompts`), when they are."""
        G = rollout.group_size
        rows = [p * G + j for p in prompt_ids for j in range(G)]
        cmask = rollout.completion_mask[rows]
        T = max(1, int(cmask.sum(-1).max()))  # trim the padding every row of this chunk has
        ids, cmask = rollout.completion_ids[rows][:, :T], cmask[:, :T]
        with self.precision.autocast():  # bf16 compute on float32 masters (precision.py)
            batch = prompts.select(prompt_ids) if prompts is not None else rollout.batch.select_prompts(prompt_ids)
            logp, ent = completion_logprobs(
                model,
                batch,
                ids,
                cmask,
                group_size=G,
                shared_prefix=self.shared_prefix,
                packed=self.packed,
                with_entropy=entropy,
                temperature=self.temperature,
            )
        return logp, ent, rows, T

    def _micro_batches(self, rollout: Rollout, B: int, G: int) -> list[list[int]]:
        """The prompts of each micro-batch: ``grad_accum`` near-equal chunks, or by ``token_budget``."""
        if self.token_budget is None:
            return [c for c in split_contiguous(list(range(B)), self.grad_accum) if c]
        prompt_len = rollout.batch.attention_mask.sum(1).tolist()
        if len(prompt_len) == B * G:  # expanded: one row per completion
            prompt_len = prompt_len[::G]
        completion_len = rollout.completion_mask.sum(1).view(B, G).tolist()
        if self.packed:  # the real tokens the packed pass scores
            return split_by_tokens(
                B, lambda c: sum(G * prompt_len[p] + sum(completion_len[p]) for p in c), self.token_budget
            )
        # padded: every row as long as the chunk's longest prompt plus its longest completion
        return split_by_tokens(
            B,
            lambda c: len(c) * G * (max(prompt_len[p] for p in c) + max(max(completion_len[p]) for p in c)),
            self.token_budget,
        )

    def _is_weights(
        self, trainer_logp: torch.Tensor, rollout: Rollout, rows: list[int], T: int, stats: CorrectionStats
    ) -> torch.Tensor:
        """The rollout correction's weights of these rows ((N, T) or (N, 1)), from π_θold's log-probs."""
        if rollout.logprobs is None:
            raise ConfigError(
                f"rollout.importance_correction.mode is {self.correction.mode!r} but the rollout engine returned no "
                "log-probs of the sampled tokens: set rollout.engine_options.return_logprobs: true (hf, vllm), or "
                "rollout.importance_correction.mode: off"
            )
        cmask = rollout.completion_mask[rows][:, :T].to(trainer_logp.device)
        c = self.correction
        weights, outside = importance_weights(
            trainer_logp.detach(),
            rollout.logprobs[rows][:, :T].to(trainer_logp.device),
            cmask,
            mode=c.mode,
            clip_min=c.clip_min,
            clip_max=c.clip_max,
        )
        stats.add(weights, outside, cmask)
        return weights

    def __call__(self, rollout: Rollout, advantages: torch.Tensor, keep: torch.Tensor) -> UpdateStats:
        """Update the policy on ``rollout`` with per-row ``advantages`` (N,) on the rows ``keep`` (N,) marks."""
        G = rollout.group_size
        B = len(rollout.texts) // G
        completion_mask = rollout.completion_mask  # (N, T)
        loss_mask = completion_mask * keep.to(completion_mask.device, completion_mask.dtype).unsqueeze(1)  # (N, T)
        self.model.train()
        chunks = self._micro_batches(rollout, B, G)
        total_rows, total_tokens = B * G, float(loss_mask.sum().clamp(min=1))
        prompts = _group_prompts(rollout)  # every scoring pass selects its prompts from these B rows

        old_logps: list[Any] = [None] * len(chunks)
        ref_logps: list[Any] = [None] * len(chunks)
        with torch.no_grad():
            for c, prompt_ids in enumerate(chunks):
                if self.updates_per_batch > 1:
                    old_logps[c] = self._score(self.policy, rollout, prompt_ids, entropy=False, prompts=prompts)[0]
                if self.ref_model is not None:
                    ref_logps[c] = self._score(self.ref_model, rollout, prompt_ids, entropy=False, prompts=prompts)[0]

        stats_sum: dict[str, float] = {}
        entropy_sum, grad_norm, engine_gap = 0.0, 0.0, None
        is_weights: list[Any] = [None] * len(chunks)  # the rollout correction's, per micro-batch (update 0 on)
        correction = CorrectionStats()
        for update in range(self.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            entropy_sum = 0.0
            for c, prompt_ids in enumerate(chunks):
                # under torchrun the gradients are averaged over ranks once, with the last micro-batch
                with self.par.grad_sync(self.model, c == len(chunks) - 1):
                    logp, ent, rows, T = self._score(self.model, rollout, prompt_ids, entropy=True, prompts=prompts)
                    if not self.policy_loss.entropy_needs_grad:
                        ent = ent.detach()  # frees the entropy's graph now
                    mask = loss_mask[rows][:, :T]
                    extra = {}
                    if self.correction is not None:  # weights from π_θold: the old policy's, or this pass's
                        if is_weights[c] is None:
                            old = old_logps[c] if old_logps[c] is not None else logp
                            is_weights[c] = self._is_weights(old, rollout, rows, T, correction)
                        extra["is_weights"] = is_weights[c]
                    loss, stats = self.policy_loss(
                        logp=logp,
                        old_logp=old_logps[c],
                        ref_logp=ref_logps[c],
                        advantages=advantages[rows].to(logp.device),
                        mask=mask,
                        entropy=ent,
                        **extra,
                    )
                    # micro-batches weighted so that their sum is the loss of the whole batch
                    weight = (
                        float(mask.sum()) / total_tokens if self.aggregation == "token_mean" else len(rows) / total_rows
                    )
                    self.precision.backward(loss * weight)
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + weight * float(v)
                # H(q) of §3.2: per-response mean token entropy, averaged over the batch
                entropy_sum += (
                    float(grpo.aggregate(ent.detach(), completion_mask[rows][:, :T], "sequence_mean"))
                    * len(rows)
                    / total_rows
                )
                if update == 0 and rollout.logprobs is not None:
                    # the sampler's log-probs vs the ones the loss uses (the multimodal-position check)
                    gap = float(
                        (
                            (logp.detach() - rollout.logprobs[rows][:, :T].to(logp.device)).abs()
                            * completion_mask[rows][:, :T].to(logp.device)
                        ).max()
                    )
                    engine_gap = gap if engine_gap is None else max(engine_gap, gap)
            grad_norm = self.precision.clip_and_step(self.optimizer, self.trainable, self.max_grad_norm)
        self.scheduler.step()
        return UpdateStats(
            stats={k: v / self.updates_per_batch for k, v in stats_sum.items()},
            entropy=entropy_sum,
            grad_norm=grad_norm,
            engine_gap=engine_gap,
            correction=correction.metrics(),
        )


def _group_prompts(rollout: Rollout) -> Any:
    """The rollout's prompts with one row per group (B rows, pixels once per image), or None when its batch is
    not G consecutive copies of each prompt.  Selecting a micro-batch's prompts from these copies B-row slices
    where ``select_prompts`` on the expanded batch copied B x G rows of pixels (and the scorer then collapsed
    them again) for every scoring pass: reference, old policy, policy."""
    G, batch = rollout.group_size, rollout.batch
    if batch.group_size == G and batch.num_rows == len(rollout.texts):
        return batch.collapse()
    return None
