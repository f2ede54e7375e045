"""Dynamic sampling (DAPO) in real training steps: which groups train, what it cost, what happens at the cap.

The groups' signal is set by construction, not by what a random policy samples: the ``signal_for`` test reward
gives the G rollouts of the listed samples G different values and every other sample's rollouts the same one.
With the pool's draw order read from a copy of the pool, every figure below is known by hand (B = 2 prompts a
step, G = 3, refills of ``missing / share kept so far``).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from syngrpo.errors import SyngrpoError
from syngrpo.hookspecs import hookimpl
from syngrpo.models.scoring import completion_logprobs
from syngrpo.testing import registry_with
from syngrpo.train.rollouts import concat_rollouts
from syngrpo.train.trainer import Trainer

DS = "algorithm.dynamic_sampling={{enabled: true, metric: reward, max_tries: {tries}, at_cap: {at_cap}}}"


class SignalFor:
    """Rows of a sample in ``ids`` score 0, 1, 2 ... within their group; every other row scores 0."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self, responses, samples, *, task, frames=None):
        seen: dict[str, int] = {}
        out = []
        for s in samples:
            k = seen[s.id] = seen.get(s.id, -1) + 1
            out.append(float(k) if s.id in self.ids else 0.0)
        return out


@pytest.fixture
def signal():
    return SignalFor()


@pytest.fixture
def ds_registry(signal):
    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register("signal_for", lambda **o: signal, description="test reward: spread only for listed samples")

    return registry_with(Plugin(), autoload=True)


def _step(cfg, run_dir, registry, signal, pick):
    """One step with ``signal.ids`` = the samples at positions ``pick`` of the pool's draw order."""
    trainer = Trainer(cfg, run_dir, registry=registry)
    try:
        trainer.setup()
        order = [s.id for s in copy.deepcopy(trainer.pool).draw(8)]
        signal.ids = {order[i] for i in pick}
        before = {n: p.detach().clone() for n, p in trainer.bundle.model.named_parameters()}
        metrics = trainer.train_step(1)
        moved = any(not torch.equal(p.detach(), before[n]) for n, p in trainer.bundle.model.named_parameters())
        trained = [r["sample_id"] for r in trainer._step_samples]
        return metrics, trained, order, moved, trainer.pool.position
    finally:
        trainer.close()


def _cfg(config_for, tiny_policy_dir, *extra):
    return config_for(tiny_policy_dir, "rewards.terms=[{name: signal_for}]", "algorithm.beta=0",
                      "logging.samples_per_step=8", *extra)


@pytest.mark.parametrize(("pick", "trains", "dropped", "surplus"), [
    # draw 1 = o0 o1: o0 kept, 1 missing, half kept -> refill 2 = o2 o3: o3 kept
    pytest.param([0, 3], [0, 3], 2, 0, id="refill_once"),
    # the refill keeps o2 and o3: o3 is the surplus (the first kept groups train, as in verl)
    pytest.param([0, 2, 3], [0, 2], 1, 1, id="surplus_dropped"),
])
def test_groups_without_signal_are_replaced_by_later_prompts(pick, trains, dropped, surplus, tiny_policy_dir,
                                                             tmp_path, ds_registry, signal, config_for):
    cfg = _cfg(config_for, tiny_policy_dir, DS.format(tries=4, at_cap="fill"))
    metrics, trained, order, moved, position = _step(cfg, tmp_path, ds_registry, signal, pick)
    assert trained == [order[i] for i in trains]
    assert metrics["dynamic/tries"] == 2 and metrics["dynamic/prompts_drawn"] == 4 == position
    assert (metrics["dynamic/groups_dropped"], metrics["dynamic/groups_surplus"]) == (dropped, surplus)
    assert metrics["dynamic/groups_filled"] == 0 and metrics["dynamic/zero_variance_frac"] == dropped / 4
    assert moved  # the joined batch trained: every group in it has a spread
    assert metrics["reward/zero_variance_groups_total"] == 0.0


def test_at_the_cap_the_batch_is_filled_with_dropped_groups(tiny_policy_dir, tmp_path, ds_registry, signal,
                                                            config_for):
    """No group ever has signal: 3 tries of 2 prompts each (nothing kept: a whole batch each time), then the first
    two dropped groups train as plain GRPO would have trained them (advantage 0: nothing moves, beta 0)."""
    cfg = _cfg(config_for, tiny_policy_dir, DS.format(tries=3, at_cap="fill"))
    metrics, trained, order, moved, position = _step(cfg, tmp_path, ds_registry, signal, [])
    assert trained == order[:2]
    assert (metrics["dynamic/tries"], metrics["dynamic/prompts_drawn"], metrics["dynamic/groups_dropped"],
            metrics["dynamic/groups_filled"]) == (3, 6, 6, 2)
    assert position == 6 and not moved
    assert "reached max_tries (3)" in (tmp_path / "train.log").read_text()  # said once, where the user looks


def test_at_the_cap_error_stops_with_what_to_change(tiny_policy_dir, tmp_path, ds_registry, signal, config_for):
    cfg = _cfg(config_for, tiny_policy_dir, DS.format(tries=2, at_cap="error"))
    with pytest.raises(SyngrpoError, match=r"2 rollouts .* found 0 of the 2 groups whose reward varies.*max_tries"):
        _step(cfg, tmp_path, ds_registry, signal, [])


def test_off_it_trains_on_the_first_draw_and_logs_nothing_of_it(tiny_policy_dir, tmp_path, ds_registry, signal,
                                                                 config_for):
    metrics, trained, order, _, position = _step(_cfg(config_for, tiny_policy_dir), tmp_path, ds_registry, signal,
                                                 [3])
    assert trained == order[:2] and position == 2
    assert not any(k.startswith("dynamic/") for k in metrics)


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_joined_draws_score_as_each_draw_alone(shared_prefix, tiny_policy_dir, tmp_path, ds_registry, config_for):
    """Draws of different prompt and completion lengths joined (left- and right-padded): every completion's
    log-probs equal those of its own draw, so the update trains on what was sampled."""
    cfg = _cfg(config_for, tiny_policy_dir, "rollout.max_new_tokens=12")
    trainer = Trainer(cfg, tmp_path, registry=ds_registry)
    try:
        trainer.setup()
        parts = [trainer.collect.draw(1, 2), trainer.collect.draw(1, 4, attempt=1)]
        # the second draw's completions cut to 7 tokens (a prefix of what was sampled is still a completion): the
        # join must right-pad them, and left-pad whichever draw has the shorter prompts
        r = parts[1].rollout
        parts[1].rollout = replace(r, completion_ids=r.completion_ids[:, :7], completion_mask=r.completion_mask[:, :7],
                                   logprobs=None, truncated=None)
        joined = concat_rollouts(parts, trainer.bundle.pad_token_id)
        assert parts[0].rollout.batch.prompt_length != parts[1].rollout.batch.prompt_length
        model, G = trainer.bundle.model, 3

        def logp(r):
            with torch.no_grad():
                return completion_logprobs(model, r.batch, r.completion_ids, r.completion_mask, group_size=G,
                                           shared_prefix=shared_prefix)[0]

        alone = [logp(p.rollout) for p in parts]
        together = logp(joined.rollout)
        row = 0
        for lp in alone:
            n, t = lp.shape
            assert torch.allclose(together[row:row + n, :t], lp, atol=1e-5)
            assert not together[row:row + n, t:].any()  # the padding of a shorter draw scores nothing
            row += n
        assert joined.samples == parts[0].samples + parts[1].samples and joined.rollout.group_size == G
    finally:
        trainer.close()


def test_a_resumed_run_draws_and_trains_as_the_uninterrupted_one(tiny_policy_dir, tmp_path, ds_registry, signal,
                                                                 config_for):
    """Refills advance the pool and sample with seeds of their own: a run stopped after step 1 and resumed repeats
    step 2's draws, kept groups and update exactly (metrics equal, refills included)."""
    from syngrpo.rundir.runlog import read_jsonl

    signal.ids = {f"rec-train-{i:05d}" for i in range(0, 8, 3)}  # some groups have a spread, most none
    cfg = _cfg(config_for, tiny_policy_dir, DS.format(tries=3, at_cap="fill"), "optim.max_steps=2",
               "logging.save_every=1")
    with Trainer(cfg, tmp_path / "straight", registry=ds_registry) as t:
        t.train()
    with Trainer(cfg, tmp_path / "stopped", registry=ds_registry) as t:
        t.train(until=1)
    with Trainer(cfg, tmp_path / "stopped", resume=tmp_path / "stopped", registry=ds_registry) as t:
        t.train()
    straight, resumed = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("straight", "stopped"))
    assert sum(r["dynamic/tries"] for r in straight) > 2  # refills happened
    for a, b in zip(straight, resumed, strict=True):
        same = {k: v for k, v in a.items() if not k.startswith("time/")}
        assert same == pytest.approx({k: b[k] for k in same}, rel=1e-6, abs=1e-7), f"step {a['step']}"
