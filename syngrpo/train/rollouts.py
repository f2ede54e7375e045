"""Steps 1-4 of the trainer: a batch of prompts, G rollouts each, parsed and scored by the reward terms.

:class:`RolloutCollector` draws the prompts from the data pool (every rank the same global batch, keeping its
slice), encodes image + question + response-format instructions, samples G responses per prompt (MC-GRPO:
one more), parses them and scores the registered reward terms and V(q) (:meth:`RewardScorer.score
<syngrpo.train.rewards.RewardScorer.score>`; R_diversity is added by the trainer once the batch is final).

With ``algorithm.dynamic_sampling`` on (DAPO; the rules and how they differ from verl's and EasyR1's are in
:mod:`syngrpo.algo.dynamic_sampling`) it keeps only the groups whose ``metric`` varies, draws more prompts
until every rank has its share, and joins the draws into one batch: the rollouts (completions right-padded
to the longest, prompts left-padded to the longest), the parsed responses and the rewards.  Under
``torchrun`` the ranks decide together (one gather per draw): every rank rolls out as many times as the rank
that needs the most, so the engines' collectives stay in step and every rank trains on the same number of
groups.  Each draw samples with its own seed, fixed by (run seed, step, draw), so a resumed run repeats it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from syngrpo.algo.dynamic_sampling import SamplingReport, groups_with_signal, refill_size
from syngrpo.config import TrainConfig
from syngrpo.data.images import load_sample_images
from syngrpo.data.pool import DataPool
from syngrpo.errors import SyngrpoError
from syngrpo.models.policy import encode_prompts
from syngrpo.models.prompts import PromptBatch
from syngrpo.models.rollout import Rollout
from syngrpo.perception.response import parse_response
from syngrpo.scale.parallel import Parallel
from syngrpo.train.evaluate import build_prompts
from syngrpo.train.rewards import RewardScorer, StepRewards, concat_rewards, select_groups
from syngrpo.types import ParsedResponse, Sample


@dataclass
class ScoredRollouts:
    """Prompts, their rollouts (rows prompt-major), the parsed responses and the reward terms (no R_diversity)."""

    samples: list[Sample]
    rollout: Rollout
    parsed: list[ParsedResponse]
    rewards: StepRewards
    #: the pool's epoch when the step's first prompts were drawn
    epoch: int = 0
    #: wall time spent sampling (the engine's ``generate``), all draws together
    seconds: float = 0.0
    #: what dynamic sampling did (one try, nothing dropped, when it is off)
    report: SamplingReport = field(default_factory=SamplingReport)

    @property
    def num_groups(self) -> int:
        return len(self.samples)


# ---- picking and joining groups ---------------------------------------------------------------------------


def _pad_right(t: torch.Tensor, length: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, length - t.shape[-1]), value=value)


def _pad_left(t: torch.Tensor, length: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(t, (length - t.shape[-1], 0), value=value)


def concat_prompts(batches: Sequence[PromptBatch], pad_token_id: int) -> PromptBatch:
    """Prompt batches of one group size as one: token rows left-padded to the longest (as the processor pads),
    pixel values and per-row lists in order."""
    first = batches[0]
    P = max(b.prompt_length for b in batches)
    lists = ("frames", "prompts", "images", "input_frames")
    return PromptBatch(
        input_ids=torch.cat([_pad_left(b.input_ids, P, pad_token_id) for b in batches]),
        attention_mask=torch.cat([_pad_left(b.attention_mask, P, 0) for b in batches]),
        pixel_values=torch.cat([b.pixel_values for b in batches]),
        image_grid_thw=torch.cat([b.image_grid_thw for b in batches]),
        mm_token_type_ids=torch.cat([_pad_left(b.mm_token_type_ids, P, 0) for b in batches]),
        group_size=first.group_size, family=first.family,
        **{name: [x for b in batches for x in getattr(b, name)] for name in lists},
        **({"image_counts": [n for b in batches for n in b.counts()],
            "image_lists": [b.row_images(r) for b in batches for r in range(b.num_rows)]}
           if any(b.image_counts for b in batches) else {}),
    )


def select_rollouts(part: ScoredRollouts, groups: Sequence[int]) -> ScoredRollouts:
    """The given groups of ``part``, in that order."""
    r, G = part.rollout, part.rollout.group_size
    rows = [g * G + i for g in groups for i in range(G)]
    idx = torch.tensor(rows, dtype=torch.long, device=r.completion_ids.device)
    rollout = Rollout(
        completion_ids=r.completion_ids[idx], completion_mask=r.completion_mask[idx], texts=[r.texts[i] for i in rows],
        prompt_index=torch.arange(len(groups), device=r.prompt_index.device).repeat_interleave(G),
        batch=r.batch.select_prompts(groups), group_size=G,
        logprobs=r.logprobs[idx] if r.logprobs is not None else None,
        truncated=r.truncated[idx] if r.truncated is not None else None,
    )
    return ScoredRollouts(samples=[part.samples[g] for g in groups], rollout=rollout,
                          parsed=[part.parsed[i] for i in rows], rewards=select_groups(part.rewards, groups),
                          epoch=part.epoch)


def concat_rollouts(parts: Sequence[ScoredRollouts], pad_token_id: int) -> ScoredRollouts:
    """Draws of one step as one batch, in order (completions right-padded with ``pad_token_id``, mask 0)."""
    if len(parts) == 1:
        return parts[0]
    rs, G = [p.rollout for p in parts], parts[0].rollout.group_size
    T = max(r.completion_ids.shape[1] for r in rs)
    n = sum(p.num_groups for p in parts)
    logprobs = None
    if all(r.logprobs is not None for r in rs):
        logprobs = torch.cat([_pad_right(r.logprobs, T, 0.0) for r in rs])
    rollout = Rollout(
        completion_ids=torch.cat([_pad_right(r.completion_ids, T, pad_token_id) for r in rs]),
        completion_mask=torch.cat([_pad_right(r.completion_mask, T, 0) for r in rs]),
        texts=[t for r in rs for t in r.texts],
        prompt_index=torch.arange(n, device=rs[0].prompt_index.device).repeat_interleave(G),
        batch=concat_prompts([r.batch for r in rs], pad_token_id), group_size=G, logprobs=logprobs,
        truncated=torch.cat([r.truncated for r in rs]) if all(r.truncated is not None for r in rs) else None,
    )
    return ScoredRollouts(samples=[s for p in parts for s in p.samples], rollout=rollout,
                          parsed=[x for p in parts for x in p.parsed],
                          rewards=concat_rewards([p.rewards for p in parts]), epoch=parts[0].epoch)


# ---- the collector ----------------------------------------------------------------------------------------


class RolloutCollector:
    """Steps 1-4 of a training step (module doc); ``collector(step) -> ScoredRollouts``.

    ``sampling`` is the context the engine samples in (the trainer's: gathered FSDP weights, autocast);
    ``seed(step, what)`` the per-step seed of :func:`syngrpo.train.trainer.step_seed` with the rank's suffix.
    """

    def __init__(self, cfg: TrainConfig, *, pool: DataPool, par: Parallel, engine: Any, bundle: Any, task: Any,
                 rewards: RewardScorer, group_size: int, response_mode: str,
                 sampling: Callable[[], Any], seed: Callable[[int, str], int],
                 say: Callable[[str], None] = lambda text: None) -> None:
        self.cfg, self.pool, self.par, self.engine, self.bundle, self.task = cfg, pool, par, engine, bundle, task
        self.rewards, self.group_size, self.response_mode = rewards, group_size, response_mode
        self.sampling, self.seed, self.say = sampling, seed, say
        self._said_cap = False

    def draw(self, step: int, n: int, attempt: int = 0) -> ScoredRollouts:
        """``n`` prompts of the global batch (this rank's slice), rolled out, parsed and scored."""
        cfg, bundle = self.cfg, self.bundle
        epoch = self.pool.epoch
        samples = self.par.my_slice(self.pool.draw(n))
        prompts = encode_prompts(bundle, [load_sample_images(s) for s in samples],
                                 build_prompts(self.task, samples, self.response_mode),
                                 box_images=[s.box_image for s in samples])
        t0 = time.perf_counter()
        with self.sampling():  # the bf16 compute weights of a mixed-precision or sharded run
            rollout = self.engine.generate(bundle, prompts, num_generations=self.group_size,
                                           temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                           max_new_tokens=cfg.rollout.max_new_tokens,
                                           generator_seed=self.seed(step, "rollout" if attempt == 0
                                                                    else f"rollout/draw{attempt}"))
        seconds = time.perf_counter() - t0
        parsed = [parse_response(text, self.response_mode) for text in rollout.texts]
        rewards = self.rewards.score(parsed, [samples[int(i)] for i in rollout.prompt_index],
                                     list(rollout.batch.frames), task=self.task, group_size=self.group_size)
        return ScoredRollouts(samples=samples, rollout=rollout, parsed=parsed, rewards=rewards, epoch=epoch,
                              seconds=seconds, report=SamplingReport(prompts_drawn=n))

    def __call__(self, step: int) -> ScoredRollouts:
        batch = self.cfg.optim.batch_size
        first = self.draw(step, batch)
        if not self.cfg.algorithm.dynamic_sampling.enabled:
            return first
        return self._dynamic(step, first)

    def _signal(self, part: ScoredRollouts) -> list[bool]:
        r = part.rewards
        values = r.accuracy if self.cfg.algorithm.dynamic_sampling.metric == "accuracy" else r.totals
        return groups_with_signal(values, r.group_size)

    def _dynamic(self, step: int, part: ScoredRollouts) -> ScoredRollouts:
        """DAPO's loop (:mod:`syngrpo.algo.dynamic_sampling`): drop groups without signal, refill, join."""
        ds, par = self.cfg.algorithm.dynamic_sampling, self.par
        share = self.cfg.optim.batch_size // max(par.world, 1)  # groups this rank trains on
        kept: list[ScoredRollouts] = []
        dropped: list[ScoredRollouts] = []
        n_kept = n_drawn = tries = 0
        seconds, epoch = 0.0, part.epoch
        while True:
            signal = self._signal(part)
            kept += [select_rollouts(part, [g for g, s in enumerate(signal) if s])] if any(signal) else []
            dropped += [select_rollouts(part, [g for g, s in enumerate(signal) if not s])] if not all(signal) else []
            n_kept, n_drawn, tries = n_kept + sum(signal), n_drawn + len(signal), tries + 1
            seconds += part.seconds
            every = par.gather((n_kept, n_drawn))  # the ranks decide together: one more draw for all, or none
            missing = max(share - k for k, _ in every)
            if missing <= 0 or tries >= ds.max_tries:
                break
            per_rank = refill_size(missing, sum(k for k, _ in every), sum(d for _, d in every), share)
            part = self.draw(step, per_rank * max(par.world, 1), tries)
        if missing > 0 and ds.at_cap == "error":
            raise SyngrpoError(
                f"dynamic sampling at step {step}: {tries} rollouts (algorithm.dynamic_sampling.max_tries) found "
                f"{sum(k for k, _ in every)} of the {self.cfg.optim.batch_size} groups whose "
                f"{ds.metric} varies ({sum(d for _, d in every)} prompts drawn). The prompts may be too easy or too "
                "hard for the policy now: raise max_tries, set at_cap: fill (train on the groups dropped), or "
                "metric: reward")
        pad = self.bundle.pad_token_id
        surplus, filled = max(n_kept - share, 0), max(share - n_kept, 0)
        if filled:  # at the cap (at_cap: fill): dropped groups, in draw order, train as in plain GRPO
            kept.append(select_rollouts(concat_rollouts(dropped, pad), range(filled)))
            if not self._said_cap:  # once a run: the metrics say it every step (dynamic/groups_filled)
                self.say(f"dynamic sampling: step {step} reached max_tries ({ds.max_tries}) short of groups whose "
                         f"{ds.metric} varies; the batch was filled with groups without signal (at_cap: fill). "
                         "dynamic/groups_filled counts them each step")
                self._said_cap = True
        joined = concat_rollouts(kept, pad)
        if surplus:  # the last draw's extra groups (verl keeps the first train_batch_size * n rows too)
            joined = select_rollouts(joined, range(share))
        totals = [sum(x) for x in zip(*par.gather((n_drawn, n_drawn - n_kept, surplus, filled)), strict=True)]
        joined.epoch, joined.seconds = epoch, seconds
        joined.report = SamplingReport(tries=tries, prompts_drawn=totals[0], groups_dropped=totals[1],
                                       groups_surplus=totals[2], groups_filled=totals[3])
        return joined
