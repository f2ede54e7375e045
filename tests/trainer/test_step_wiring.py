"""``Trainer.train_step`` wired right, pinned by numbers worked out by hand.

The maths functions have unit tests of their own (tests/test_grpo_maths.py, test_diversity.py,
test_losses.py); these tests pin the *wiring* of one step, each one able to fail for one error a
reader of the paper would name (issue #23):

* which terms enter r_i (eq. 7) and with which weights, ``rewards.diversity_weight`` included;
* the advantages: eq. 1 of those totals (not of R_acc alone, not with the sign flipped);
* the update: the log-prob of the completion with the positive advantage rises against the one
  with the negative advantage, by the amount one AdamW step at the configured lr predicts;
* eq. 6's target Ṽ(q) with smoothing on and off (the Figure 7 ablation);
* eq. 8 and its ``random`` ablation (``synthesis.description_selection``).

The rollouts are scripted (:mod:`scripted_engine`: a real engine plugin that writes fixed
completions), so R_acc (the real REC IoU of the scripted box), R_format (the real parser) and the
test term ``written`` (the number in ``<think>``) are known before the step runs.  The policy is
the tiny random Qwen2.5-VL, scored and updated for real.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from scripted_engine import bind_samples, completion, scripted_registry

from syngrpo.synthesis.server.inprocess import InProcessTransport
from syngrpo.train.trainer import Trainer

G = 4


def _trainer(policy, tmp_path, config_for, script, *extra, mode="async", record_grads=False):
    registry, plugin = scripted_registry(script, record_grads=record_grads)
    cfg = config_for(policy, "rollout.engine=scripted", "data.toy.n_train=4", "logging.samples_per_step=8",
                     "sft.enabled=false", *extra, *(["synthesis.transport=inprocess"] if mode != "off" else []),
                     mode=mode)
    transport = InProcessTransport(registry=registry) if mode != "off" else None
    trainer = Trainer(cfg, tmp_path, registry=registry, transport=transport)
    trainer.setup()
    assert plugin.engine is not None and trainer.engine is plugin.engine
    bind_samples(trainer, plugin.engine)
    return trainer, plugin.engine


def _eq1(totals: list[float], eps: float = 1e-4) -> list[float]:
    """Eq. 1 with the sample std (VLM-R1, TRL), written with Python's statistics module."""
    mean, std = statistics.fmean(totals), statistics.stdev(totals)
    return [(t - mean) / (std + eps) for t in totals]


# ---- eq. 7 and eq. 1 through one step ---------------------------------------------------------------------------
# Per prompt b (batch position): R_acc, R_format (1 = well formed; the last completion of prompt 1 has text after
# </answer>), the `written` term (the number in <think>) and the <score> of each of the G = 4 completions.
PARTS = [
    dict(acc=[1, 1, 0, 0], fmt=[1, 1, 1, 1], written=[0, 0, 0.25, 0.25], score=[1, 0.5, 0.75, 0]),
    dict(acc=[1, 1, 1, 1], fmt=[1, 1, 1, 0], written=[0.5, 0, 0, 0], score=[0, 0.25, 1, 0.5]),
]
# Step 1: V(q) = pvar(R_acc) / (1/4) = [pvar(1,1,0,0) = 1/4 -> 1, 0]; the first step's moving average is the batch
# mean, so Ṽ = V: R_diversity = 1 - |score - Ṽ| (eq. 6)
R_DIV = [[1 - abs(s - 1.0) for s in PARTS[0]["score"]],  # [1, 0.5, 0.75, 0]
         [1 - abs(s - 0.0) for s in PARTS[1]["score"]]]  # [1, 0.75, 0, 0.5]
assert R_DIV == [[1, 0.5, 0.75, 0], [1, 0.75, 0, 0.5]]

ALL_TERMS = "rewards.terms=[{name: accuracy}, {name: format, weight: 0.5}, {name: written, weight: 2}]"
NO_ACC = "rewards.terms=[{name: format, weight: 0.5}, {name: written, weight: 2}]"
EQ7_CASES = {
    # r = R_acc + 0.5 R_format + 2 written + 0.5 R_div
    #   b=0: [1+.5+0+.5, 1+.5+0+.25, 0+.5+.5+.375, 0+.5+.5+0]      b=1: [1+.5+1+.5, 1+.5+0+.375, 1+.5+0+0, 1+0+0+.25]
    "eq7": ([ALL_TERMS, "rewards.diversity_weight=0.5"], 0.5, True,
            [[2.0, 1.75, 1.375, 1.0], [3.0, 1.875, 1.5, 1.25]]),
    # the "w/o R_diversity" ablation: r = R_acc + 0.5 R_format + 2 written
    "diversity_weight_0": ([ALL_TERMS, "rewards.diversity_weight=0"], 0.0, True,
                           [[1.5, 1.5, 1.0, 1.0], [2.5, 1.5, 1.5, 1.0]]),
    # accuracy not a term: it stays out of r (V(q) is still its spread)
    "no_accuracy_term": ([NO_ACC, "rewards.diversity_weight=0.5"], 0.5, False,
                         [[1.0, 0.75, 1.375, 1.0], [2.0, 0.875, 0.5, 0.25]]),
}


def _eq7_script(call, b, sample, frame):
    p = PARTS[b]
    return [completion(frame, sample.solution, acc=p["acc"][i], written=p["written"][i], score=p["score"][i],
                       description=f"scene {b}.{i}", trailing="" if p["fmt"][i] else " and more")
            for i in range(G)]


@pytest.mark.parametrize("case", list(EQ7_CASES))
def test_rewards_and_advantages_of_a_step_are_eq7_and_eq1_of_the_configured_terms(case, tiny_policy_dir, tmp_path,
                                                                                   config_for):
    extra, div_weight, acc_term, want_totals = EQ7_CASES[case]
    trainer, engine = _trainer(tiny_policy_dir, tmp_path, config_for, _eq7_script, f"rollout.num_generations={G}",
                               "optim.batch_size=2", *extra)
    try:
        metrics = trainer.train_step(1)
        records = trainer._step_samples
        assert len(records) == 2
        for b, record in enumerate(records):
            p, done = PARTS[b], record["completions"]
            # each term as weighted in eq. 7, and R_diversity weighted by rewards.diversity_weight
            assert [c["format"] for c in done] == pytest.approx([0.5 * f for f in p["fmt"]])
            assert [c["written"] for c in done] == pytest.approx([2 * w for w in p["written"]])
            assert [c["diversity"] for c in done] == pytest.approx([div_weight * r for r in R_DIV[b]])
            if acc_term:
                assert [c["accuracy"] for c in done] == pytest.approx(p["acc"])
            else:
                assert "accuracy" not in done[0]
            assert record["v"] == pytest.approx([1.0, 0.0][b])  # V(q) is R_acc's spread, a term or not
            # r_i (eq. 7) and its group advantages (eq. 1), row by row of this prompt's group
            assert [c["reward"] for c in done] == pytest.approx(want_totals[b], abs=1e-9)
            assert [c["advantage"] for c in done] == pytest.approx(_eq1(want_totals[b]), abs=1e-5)
        # the step's means: each weighted term over the 8 rollouts, R_diversity unweighted beside it
        assert metrics["reward/total"] == pytest.approx(sum(map(sum, want_totals)) / 8)
        assert metrics["reward/format"] == pytest.approx(0.5 * 7 / 8)
        assert metrics["reward/written"] == pytest.approx(2 * 1.0 / 8)
        assert metrics["reward/diversity"] == pytest.approx(div_weight * 4.5 / 8)
        assert metrics["reward/diversity_raw"] == pytest.approx(4.5 / 8)
        assert metrics["accuracy"] == pytest.approx(6 / 8)
        assert ("reward/accuracy" in metrics) == acc_term
    finally:
        trainer.close()


# ---- the update's direction and size ----------------------------------------------------------------------------
def _pair_script(call, b, sample, frame):
    # one prompt, two completions: `written` 1 and 0, so eq. 1 gives them +a and -a
    return [completion(frame, sample.solution, acc=1, written=1), completion(frame, sample.solution, acc=0, written=0)]


def test_one_step_raises_the_log_prob_of_the_better_completion_by_what_adamw_predicts(tiny_policy_dir, tmp_path,
                                                                                      config_for):
    """After one step, ℓ_0 - ℓ_1 (mean token log-probs of the completions with advantage +a and -a) rises.

    With one prompt of two completions, no clipping (ratio 1 on the first update), no KL gradient (the
    reference is the policy) and no gradient-norm clipping, the GRPO loss is L = -(a/2)(ℓ_0 - ℓ_1), so
    g = -(a/2) D with D = ∇(ℓ_0 - ℓ_1).  AdamW's first step moves each weight by
    -lr · g_j / (|g_j| + eps) (bias-corrected moments m̂ = g, v̂ = g²; weight decay 0), and to first order
    ℓ_0 - ℓ_1 changes by D · Δθ = lr Σ_j (a/2) D_j² / ((a/2)|D_j| + eps) > 0.  A sign error anywhere
    between the rewards and the optimizer (advantages, loss, the update's inputs) makes it fall.
    """
    lr = 1e-5
    trainer, engine = _trainer(tiny_policy_dir, tmp_path, config_for, _pair_script, "rollout.num_generations=2",
                               "optim.batch_size=1", "rollout.response_format=plain", "rewards.terms=[{name: written}]",
                               f"optim.lr={lr}", "optim.max_grad_norm=null", "optim.weight_decay=0", mode="off",
                               record_grads=True)
    try:
        trainer.train_step(1)
        record = trainer._step_samples[0]["completions"]
        a = 0.5 / (statistics.stdev([1.0, 0.0]) + 1e-4)  # eq. 1 of rewards [1, 0]
        assert [c["advantage"] for c in record] == pytest.approx([a, -a], abs=1e-6)
        before = engine.logp_before[0]
        from scripted_engine import sequence_logprobs

        after = sequence_logprobs(trainer.bundle.model, engine.rollouts[0]).detach()
        D = engine.grads[0][0] - engine.grads[0][1]
        g = (a / 2) * D.abs()
        predicted = float(lr * (g * D.abs() / (g + 1e-8)).sum())
        moved = float((after[0] - after[1]) - (before[0] - before[1]))
        assert predicted > 0
        assert moved == pytest.approx(predicted, rel=0.02), (moved, predicted)  # measured: 4e-4 apart
    finally:
        trainer.close()


# ---- eq. 6: the target Ṽ(q), with smoothing on and off ---------------------------------------------------------------
# Per step, per prompt: R_acc and <score> of each completion (the numbers of test_eq5_8_wiring.py).
SMOOTHING_SCRIPT = {
    1: [([1, 1, 1, 1], [0.0, 0.3, 1.0, 0.6]), ([1, 1, 0, 0], [0.5, 1.0, 0.2, 0.9])],
    2: [([1, 0, 0, 0], [0.1, 0.8, 0.5, 0.3]), ([1, 0.5, 0.5, 0.5], [0.9, 0.2, 0.6, 0.0])],
}
# step 2: V = [pvar(1,0,0,0) = .1875 -> .75, pvar(1,.5,.5,.5) = .046875 -> .1875], batch mean .46875;
# G_2 = .7 * .5 + .3 * .46875 = .490625.  Smoothing on: Ṽ = V * G_2 / .46875 = [.785, .19625]; off: Ṽ = V.
SMOOTHING_CASES = {
    "on": ("synthesis.smoothing=true", [0.785, 0.19625]),
    "off": ("synthesis.smoothing=false", [0.75, 0.1875]),
}


def _smoothing_script(call, b, sample, frame):
    accs, scores = SMOOTHING_SCRIPT[call][b]
    return [completion(frame, sample.solution, acc=accs[i], score=scores[i], description=f"scene {call}.{b}.{i}")
            for i in range(G)]


@pytest.mark.parametrize("case", list(SMOOTHING_CASES))
def test_r_diversity_compares_each_score_with_its_groups_target_smoothed_or_not(case, tiny_policy_dir, tmp_path,
                                                                                config_for):
    switch, target = SMOOTHING_CASES[case]
    trainer, _ = _trainer(tiny_policy_dir, tmp_path, config_for, _smoothing_script, f"rollout.num_generations={G}",
                          "optim.batch_size=2", "rewards.terms=[{name: accuracy}, {name: format}]",
                          "rewards.diversity_weight=1", "synthesis.gamma=0.7", switch)
    try:
        trainer.train_step(1)
        metrics = trainer.train_step(2)
        for b, record in enumerate(trainer._step_samples):
            _, scores = SMOOTHING_SCRIPT[2][b]
            assert record["v"] == pytest.approx([0.75, 0.1875][b])
            assert record["v_smoothed"] == pytest.approx(target[b])
            assert [c["diversity"] for c in record["completions"]] == pytest.approx(
                [1 - abs(s - target[b]) for s in scores])
        assert metrics["diversity/global_avg"] == pytest.approx(0.490625)  # G_k is tracked either way
        assert metrics["diversity/smoothed_mean"] == pytest.approx(sum(target) / 2)
    finally:
        trainer.close()


# ---- eq. 8 and the `random` ablation ------------------------------------------------------------------------------
# Every R_acc is 1, so V = Ṽ = 0 and R_diversity = 1 - score = [1, .5, .1, .8]: eq. 8 picks rollout 0 every time.
# Rollout 3 writes no description: no selection rule may pick it, though its R_diversity is the second best.
SELECT_SCORES = [0.0, 0.5, 0.9, 0.2]


def _select_script(call, b, sample, frame):
    return [completion(frame, sample.solution, acc=1, score=SELECT_SCORES[i],
                       description=f"scene {call}.{b}.{i}" if i < 3 else None) for i in range(G)]


@pytest.mark.parametrize("selection", ["diversity", "random"])
def test_description_selection_is_eq8_argmax_or_a_draw_among_usable_descriptions(selection, tiny_policy_dir,
                                                                                  tmp_path, config_for):
    trainer, _ = _trainer(tiny_policy_dir, tmp_path, config_for, _select_script, f"rollout.num_generations={G}",
                          "optim.batch_size=2", "optim.max_steps=4", "rewards.terms=[{name: accuracy}]",
                          f"synthesis.description_selection={selection}")
    try:
        chosen = []
        for step in (1, 2, 3):
            trainer.train_step(step)
            records = trainer._step_samples
            assert [c["diversity"] for c in records[0]["completions"]] == pytest.approx([1, 0.5, 0.1, 0.8])
            chosen += [r["selected"] for r in records]
        if selection == "diversity":
            assert chosen == [0] * 6  # eq. 8: argmax of R_diversity
        else:
            # a draw among rollouts 0-2 (seeded by run seed and step): not always eq. 8's choice, never rollout 3
            assert set(chosen) <= {0, 1, 2} and set(chosen) != {0}, chosen
    finally:
        trainer.close()


def test_the_advantages_the_update_uses_are_the_ones_reported(tiny_policy_dir, tmp_path, config_for, monkeypatch):
    """What samples.jsonl shows as each completion's advantage is what the policy update received."""
    trainer, _ = _trainer(tiny_policy_dir, tmp_path, config_for, _eq7_script, f"rollout.num_generations={G}",
                          "optim.batch_size=2", ALL_TERMS, "rewards.diversity_weight=0.5")
    seen = {}
    update = trainer.update

    def recording(rollout, advantages, keep):
        seen["advantages"], seen["keep"] = advantages.clone(), keep.clone()
        return update(rollout, advantages, keep)

    monkeypatch.setattr(trainer, "update", recording)
    try:
        trainer.train_step(1)
        reported = [c["advantage"] for r in trainer._step_samples for c in r["completions"]]
        assert seen["advantages"].tolist() == pytest.approx(reported, abs=1e-7)
        assert seen["advantages"].tolist() == pytest.approx(
            [a for t in EQ7_CASES["eq7"][3] for a in _eq1(t)], abs=1e-5)
        assert bool(seen["keep"].all())
        assert torch.is_tensor(seen["advantages"]) and seen["advantages"].shape == (2 * G,)
    finally:
        trainer.close()
