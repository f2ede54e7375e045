"""Eqs. 5-8 wired through ``Trainer.train_step``, against values worked out by hand.

The unit tests of :mod:`syngrpo.algo.diversity` pin each formula alone; this test pins the wiring:
each rollout's ``<score>`` is compared with *its own* group's smoothed Ṽ(q) (eq. 6), the
smoothing carries over from one step to the next, the description chosen for a prompt is that
prompt's argmax of R_diversity (eq. 8), the job goes out for the right sample, and
``diversity/zero_variance_groups`` is measured on R_acc.

The rollout engine is a stand-in (``scripted``, :mod:`scripted_engine`) registered through the plugin
registry: it returns fixed completions instead of sampling, so that R_acc and every ``<score>`` are
known in advance.  It is a legitimate test engine -- the trainer still tokenises nothing itself, scores
the scripted token ids with the real tiny Qwen2.5-VL policy and takes a real optimizer step --
not a mock of a GPU library.  The transport is the real ``inprocess`` data server, recording
every job it is sent.  Every expected number is computed by hand in the comments; the values
are chosen so that comparing a score with the *other* group's Ṽ, or with the unsmoothed V,
would pick another description.
"""

from __future__ import annotations

from typing import Any

import pytest
from scripted_engine import bind_samples, completion, scripted_registry

from syngrpo.synthesis.server.inprocess import InProcessTransport
from syngrpo.train.trainer import Trainer

G = 4

# Per step, per batch position b: (R_acc of each rollout, <score> of each rollout).
# R_acc 1 = the label's box, 0.5 = its left half (IoU 1/2), 0 = an empty box.
SCRIPT = {
    1: [([1, 1, 1, 1], [0.0, 0.3, 1.0, 0.6]),
        ([1, 1, 0, 0], [0.5, 1.0, 0.2, 0.9])],
    2: [([1, 0, 0, 0], [0.1, 0.8, 0.5, 0.3]),
        ([1, 0.5, 0.5, 0.5], [0.9, 0.2, 0.6, 0.0])],
}

# ---- the hand computation (gamma = 0.7; V = population variance of R_acc / 0.25, eq. 4) -----------------
# step 1: V = [0, 1] (var of [1,1,0,0] = 0.25); batch avg 0.5 = global avg (first step): Ṽ = V = [0, 1]
#   b=0: R_div = 1 - |s - 0| = [1.0, 0.7, 0.0, 0.4] -> i* = 0   (against b=1's Ṽ = 1: i* would be 2)
#   b=1: R_div = 1 - |s - 1| = [0.5, 1.0, 0.2, 0.9] -> i* = 1   (against b=0's Ṽ = 0: i* would be 2)
# step 2: V(b=0) = var[1,0,0,0] / .25 = 0.1875 / .25 = 0.75
#         V(b=1) = var[1,.5,.5,.5] / .25 = 0.046875 / .25 = 0.1875;  batch avg = 0.46875
#         global = 0.7 * 0.5 + 0.3 * 0.46875 = 0.490625;  Ṽ = V * 0.490625 / 0.46875 = V * 1.046666...
#         Ṽ = [0.785, 0.19625]
#   b=0: R_div = 1 - |s - 0.785| = [0.315, 0.985, 0.715, 0.515] -> i* = 1 (against 0.19625: i* would be 0)
#   b=1: R_div = 1 - |s - 0.19625| = [0.29625, 0.99625, 0.59625, 0.80375] -> i* = 1 (against 0.785: i* = 0)
EXPECTED = {
    1: {"v": [0.0, 1.0], "v_smoothed": [0.0, 1.0], "global": 0.5,
        "r_div": [[1.0, 0.7, 0.0, 0.4], [0.5, 1.0, 0.2, 0.9]], "chosen": [0, 1]},
    2: {"v": [0.75, 0.1875], "v_smoothed": [0.785, 0.19625], "global": 0.490625,
        "r_div": [[0.315, 0.985, 0.715, 0.515], [0.29625, 0.99625, 0.59625, 0.80375]], "chosen": [1, 1]},
}


def _description(step: int, b: int, i: int) -> str:
    return f"a scene for step {step} prompt {b} rollout {i}"


def _script(call: int, b: int, sample: Any, frame: Any) -> list[str]:
    """The completions of :data:`SCRIPT` for step ``call``, written for the sample at batch position ``b``."""
    accs, scores = SCRIPT[call][b]
    return [completion(frame, sample.solution, acc=accs[i], written=0, score=scores[i],
                       description=_description(call, b, i)) for i in range(G)]


class RecordingTransport(InProcessTransport):
    """The real in-process data server, keeping a copy of every job it is sent."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.jobs: list[Any] = []

    def submit(self, job):
        self.jobs.append(job)
        return super().submit(job)


def test_eqs_5_to_8_are_wired_to_the_right_groups_samples_and_jobs(tiny_policy_dir, tmp_path, config_for):
    registry, plugin = scripted_registry(_script)
    cfg = config_for(tiny_policy_dir, "rollout.engine=scripted", f"rollout.num_generations={G}",
                     "rewards.terms=[{name: accuracy}, {name: format}]", "rewards.diversity_weight=1.0",
                     "synthesis.gamma=0.7", "synthesis.transport=inprocess", "data.toy.n_train=4",
                     "optim.batch_size=2", "logging.samples_per_step=2", "sft.enabled=false", mode="async")
    transport = RecordingTransport(registry=registry)
    trainer = Trainer(cfg, tmp_path, registry=registry, transport=transport)
    try:
        trainer.setup()
        engine = plugin.engine
        assert engine is not None and trainer.engine is engine
        by_id = bind_samples(trainer, engine)

        for step in (1, 2):
            n_jobs = len(transport.jobs)
            metrics = trainer.train_step(step)
            want = EXPECTED[step]
            records = trainer._step_samples
            assert [r["sample_id"] for r in records] == engine.seen[step - 1]
            for b, record in enumerate(records):
                accs, scores = SCRIPT[step][b]
                assert record["v"] == pytest.approx(want["v"][b], abs=1e-9)
                assert record["v_smoothed"] == pytest.approx(want["v_smoothed"][b], abs=1e-9)
                got_acc = [c["accuracy"] for c in record["completions"]]
                assert got_acc == pytest.approx(accs, abs=1e-9)
                assert [c["score"] for c in record["completions"]] == scores
                # eq. 6, each rollout against its own group's smoothed value
                assert [c["diversity"] for c in record["completions"]] == pytest.approx(want["r_div"][b], abs=1e-9)
                # eq. 7: r = R_acc + R_format + R_diversity (every scripted text is well formed)
                assert [c["reward"] for c in record["completions"]] == pytest.approx(
                    [a + 1.0 + d for a, d in zip(accs, want["r_div"][b], strict=True)], abs=1e-9)
                assert record["selected"] == want["chosen"][b]  # eq. 8
            assert metrics["diversity/global_avg"] == pytest.approx(want["global"], abs=1e-9)

            # the jobs of this step: one per prompt, for that prompt's sample, with its chosen description
            jobs = transport.jobs[n_jobs:]
            sent = {job.key.rsplit(f"-{step}-", 1)[1]: job for job in jobs}
            assert set(sent) == set(engine.seen[step - 1])
            for b, sample_id in enumerate(engine.seen[step - 1]):
                job = sent[sample_id]
                assert job.description == _description(step, b, want["chosen"][b])
                assert [list(box) for box in job.boxes] == [list(map(float, box))
                                                           for box in trainer.task.foreground_boxes(by_id[sample_id])]

            if step == 1:
                # R_acc of prompt 0 is all 1 (no spread), prompt 1's is not; the total varies in both
                # groups (R_diversity differs per rollout), so only R_acc shows the collapse
                assert metrics["diversity/zero_variance_groups"] == 0.5
                assert metrics["reward/zero_variance_groups_total"] == 0.0
            else:
                assert metrics["diversity/zero_variance_groups"] == 0.0
    finally:
        trainer.close()
