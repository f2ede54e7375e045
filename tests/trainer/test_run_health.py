"""A run that cannot learn says so loudly, and the summary never calls 0 -> 0 a trend (issue #23).

The end-to-end case is the issue's own: a policy that answers in another response format than the
prompt asks for (the shipped warm start writes the ``syn`` format; ``synthesis.mode: off`` asked for
``plain``) wrote completions like ``<thinkofkarscore>utk</ a >[322, >[33, 532511]</answer>``: reward
0 on every step, and a summary that said "the mean reward went 0.00 -> 0.00 ... (down)".  The rest
feeds the run log step records directly, with the numbers each condition needs.
"""

from __future__ import annotations

import json
import logging

import pytest
from scripted_engine import bind_samples, scripted_registry

from syngrpo.rundir.health import HealthWatch, settle
from syngrpo.rundir.runlog import RunLog, read_jsonl
from syngrpo.rundir.summary import summarize_run, write_run_summary
from syngrpo.train.trainer import Trainer

#: what the shipped `syn` warm start wrote when prompted for the `plain` format (issue #23)
GARBAGE = "<thinkofkarscore>utk</ a >[322, >[33, 532511]</answer>"


def _step(step, *, parsed=1.0, flat_total=0.0, flat_acc=0.0, total=1.0, acc=0.5, grad=0.3, truncated=0.0):
    return {"step": step, "completion/parsed_frac": parsed, "reward/zero_variance_groups_total": flat_total,
            "diversity/zero_variance_groups": flat_acc, "reward/total": total, "accuracy": acc, "grad_norm": grad,
            "completion/truncated_frac": truncated}


def _log(tmp_path, records, **options):
    rl = RunLog(tmp_path, progress=False, tensorboard=False, **options)
    for r in records:
        rl.log(r["step"], {k: v for k, v in r.items() if k != "step"})
    rl.close()
    return read_jsonl(tmp_path / "warnings.jsonl"), (tmp_path / "train.log").read_text() \
        if (tmp_path / "train.log").exists() else ""


def test_a_run_log_warns_once_after_five_steps_with_no_parsed_completion_naming_the_format(tmp_path, caplog):
    dead = dict(parsed=0.0, flat_total=1.0, flat_acc=1.0, total=0.0, acc=0.0, grad=0.0)
    records = [_step(s, **dead) for s in range(1, 9)]
    with caplog.at_level(logging.WARNING, logger="syngrpo.rundir.runlog"):
        warnings, train_log = _log(tmp_path, records, total_steps=20, response_format="plain")
    assert [(w["kind"], w["first_step"], w["step"]) for w in warnings] == [("no_parse", 1, 5), ("no_signal", 1, 5)]
    parse = warnings[0]["message"]
    assert parse.startswith("no completion parsed in steps 1-5")
    assert "`plain`: <think>…</think><answer>…</answer>" in parse and "the shipped warm start writes the `syn`" in parse
    assert "rollout.response_format" in parse
    assert "every advantage is 0" in warnings[1]["message"] and "no completion parsed" in warnings[1]["message"]
    assert train_log.count(" WARNING no completion parsed in steps 1-5") == 1  # once, not every step after
    assert sum(r.getMessage().startswith("no completion parsed") for r in caplog.records) == 1  # on the terminal


def test_no_warning_before_five_steps_in_a_row_and_again_after_a_recovery(tmp_path):
    records = ([_step(s, parsed=0.0) for s in (1, 2, 3, 4)] + [_step(5)]  # 4 in a row, then a parse: nothing
               + [_step(s, parsed=0.0) for s in range(6, 11)]  # 5 in a row: a warning
               + [_step(11)] + [_step(s, parsed=0.0) for s in range(12, 17)])  # and again
    warnings, _ = _log(tmp_path, records, total_steps=100)
    assert [(w["first_step"], w["step"]) for w in warnings] == [(6, 10), (12, 16)]
    assert "this run asks for the format rollout.response_format names" in warnings[0]["message"]  # not told


def test_a_run_shorter_than_five_steps_warns_at_its_last_step_when_it_never_parsed(tmp_path):
    warnings, _ = _log(tmp_path, [_step(s, parsed=0.0, truncated=0.9) for s in (1, 2, 3)], total_steps=3)
    assert [(w["kind"], w["first_step"], w["step"]) for w in warnings] == [("no_parse", 1, 3)]
    assert "90 % of the completions stopped at rollout.max_new_tokens" in warnings[0]["message"]
    # the same three steps in a longer run are no reason to warn yet
    assert _log(tmp_path / "long", [_step(s, parsed=0.0) for s in (1, 2, 3)], total_steps=10)[0] == []


@pytest.mark.parametrize("acc, cause", [(1.0, "too easy to learn from"), (0.0, "beyond the policy"),
                                        (0.5, "always right or always wrong")])
def test_r_acc_flat_in_every_group_is_its_own_warning_with_its_cause(acc, cause):
    watch = HealthWatch(steps=2)
    got = [w for s in (1, 2) for w in watch.update(_step(s, flat_acc=1.0, acc=acc))]
    assert [w.kind for w in got] == ["no_accuracy_signal"] and cause in got[0].message
    # when the totals are flat too, the stronger warning says it all
    watch = HealthWatch(steps=2)
    assert [w.kind for s in (1, 2) for w in watch.update(_step(s, flat_acc=1.0, flat_total=1.0, acc=acc))] \
        == ["no_signal"]


def test_settle_extends_a_warning_over_every_step_it_held():
    records = [_step(s, parsed=0.0) for s in range(1, 9)] + [_step(9)]
    watch = HealthWatch(steps=5, response_format="syn")
    raised = [w for r in records for w in watch.update(r)]
    assert [(w.first_step, w.last_step) for w in raised] == [(1, 5)]
    (settled,) = settle(raised, records)
    assert (settled.first_step, settled.last_step) == (1, 8) and settled.short == "no completion parsed in steps 1-8"
    assert "`syn`" in settled.message


def test_a_resumed_run_log_carries_its_streak_on(tmp_path):
    _log(tmp_path, [_step(s, parsed=0.0) for s in (1, 2, 3)], total_steps=10)
    # resumed after step 3: two more steps without a parse make five in a row
    warnings, _ = _log(tmp_path, [_step(s, parsed=0.0) for s in (4, 5)], total_steps=10, start_step=3)
    assert [(w["first_step"], w["step"]) for w in warnings] == [(1, 5)]


# ---- the summary ------------------------------------------------------------------------------------------------------
def _summary(run, records, **options):
    _log(run, records, **options)
    return summarize_run(run, seconds=10.0)


def test_a_zero_reward_run_is_not_called_a_trend_and_leads_with_its_warnings(tmp_path):
    # the OVD run: every reward 0, gradient norm 0, no synthesis: its verdict said "(up)"
    dead = dict(parsed=0.0, flat_total=1.0, flat_acc=1.0, total=0.0, acc=0.0, grad=0.0)
    summary = _summary(tmp_path, [_step(s, **dead) for s in range(1, 9)], total_steps=8, response_format="plain")
    verdict = summary.verdict
    assert "(up)" not in verdict and "(down)" not in verdict and "->" not in verdict
    assert "the mean reward was 0 in the first and the last quarter of RL (no reward earned)" in verdict
    assert verdict.startswith("What it means: WARNING: no completion parsed in steps 1-8; no learning signal in "
                              "steps 1-8")
    text = write_run_summary(summary).read_text()
    assert "## Warnings" in text and "* **WARNING** no completion parsed in steps 1-8:" in text
    assert text.index("## Warnings") < text.index("## Rewards")
    assert text.strip().splitlines()[-1] == verdict


@pytest.mark.parametrize("first, last, want", [
    (0.501, 0.499, "stayed at 0.50 from the first to the last quarter of RL (no trend)"),
    (0.50, 0.62, "went 0.50 -> 0.62 from the first to the last quarter of RL (up)"),
    (0.62, 0.50, "went 0.62 -> 0.50 from the first to the last quarter of RL (down)"),
])
def test_the_reward_trend_is_named_only_when_it_shows_at_the_precision_printed(first, last, want, tmp_path):
    records = [_step(s, total=first if s <= 2 else last) for s in range(1, 9)]
    summary = _summary(tmp_path, records, total_steps=8)
    assert summary.warnings == []
    assert want in summary.verdict and "WARNING" not in summary.verdict


# ---- through the trainer --------------------------------------------------------------------------------------------
def test_a_policy_answering_in_another_format_gets_a_warning_naming_it(tiny_policy_dir, tmp_path, config_for):
    registry, plugin = scripted_registry(lambda call, b, sample, frame: [GARBAGE] * 3)
    cfg = config_for(tiny_policy_dir, "rollout.engine=scripted", "rollout.response_format=plain", "optim.max_steps=3",
                     "sft.enabled=false", "eval.at_start=false", mode="off")
    with Trainer(cfg, tmp_path, registry=registry) as trainer:
        trainer.setup()
        bind_samples(trainer, plugin.engine)
        trainer.train()
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["completion/parsed_frac"] for m in metrics] == [0.0, 0.0, 0.0]
    train_log = (tmp_path / "train.log").read_text()
    assert "WARNING no completion parsed in steps 1-3: " in train_log
    assert "this run asks for `plain`" in train_log
    summary = summarize_run(tmp_path, seconds=1.0)
    assert [w.kind for w in summary.warnings] == ["no_parse", "no_signal"]
    assert "(up)" not in summary.verdict and "(down)" not in summary.verdict
    assert json.loads((tmp_path / "warnings.jsonl").read_text().splitlines()[0])["response_format"] == "plain"
