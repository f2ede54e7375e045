"""Rewards written for VLM-R1, TRL or verl, named by reference, called as those frameworks call them (issue #25).

A VLM-R1 reward ``def iou_reward(completions, solution, **kwargs)`` passed the start-up signature check (its
``**kwargs`` swallowed ``task`` and ``frames``) and then failed at step 1 with ``'ParsedResponse' object is not
subscriptable``. Now a ``completions`` parameter marks TRL's convention (TRL 1.16 ``GRPOTrainer.
_calculate_rewards``: keyword arguments only, one list entry per completion, conversational completions for
image prompts), and the docs' own example trains.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from syngrpo.errors import ConfigError
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response
from syngrpo.perception.rewards import ColumnsReward, VerlReward, make_reward
from syngrpo.plugins import get_registry
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def docs_example(tmp_path: Path) -> Path:
    """The VLM-R1 reward of docs/extending.md ("Coming from VLM-R1 / TRL / verl"), as a file."""
    page = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# vlmr1_rewards\.py\n.*?)```", page, re.DOTALL).group(1)
    path = tmp_path / "vlmr1_rewards.py"
    path.write_text(code, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rec():
    return get_registry().create("tasks", "rec")


def _sample(rec, tmp_path, n=1):
    return rec.make_toy_dataset(tmp_path / "toy", n=n, seed=3, split="train", image_size=112)


@pytest.mark.parametrize("frame_size", [(224, 168), (1000, 1000)], ids=["qwen2.5-vl pixels", "0-1000 relative"])
def test_the_docs_vlmr1_reward_scores_what_the_built_in_iou_scores(rec, tmp_path, frame_size):
    """The docs' reward rescales from the answer frame with VLM-R1's ``image_grid_thw * 14``; syngrpo's REC
    accuracy maps the frame back itself. Both are the continuous IoU: they agree for either box convention."""
    samples = _sample(rec, tmp_path, n=3)
    reward = make_reward(get_registry(), f"{docs_example(tmp_path)}:iou_reward", {})
    assert isinstance(reward, ColumnsReward)
    frames, responses = [], []
    for i, s in enumerate(samples):
        frame = ImageTransform.resize(s.width, s.height, *frame_size)
        x1, y1, x2, y2 = frame.box(s.solution)
        guess = [round(x1 + 3 * i), round(y1 - 2), round(x2 + 5), round(y2 + i)]  # near misses, in the frame
        frames.append(frame)
        responses.append(parse_response(f"<think>t</think><answer>{json.dumps(guess)}</answer>", "plain"))
    responses.append(parse_response("no answer at all", "plain"))
    samples, frames = samples + samples[:1], frames + frames[:1]
    ours = get_registry().create("rewards", "accuracy")(responses, samples, task=rec, frames=frames)
    theirs = reward(responses, samples, task=rec, frames=frames)
    assert theirs[-1] == 0.0 and 0.3 < min(theirs[:-1]) < 1.0
    assert theirs == pytest.approx(ours, abs=1e-9)


def test_the_docs_vlmr1_reward_runs_through_a_two_step_training(sft_policy_dir, tmp_path, config_for):
    ref = f"{docs_example(tmp_path)}:iou_reward"
    cfg = config_for(sft_policy_dir, f"rewards.terms=[{{name: format}}, {{name: '{ref}'}}]", "optim.max_steps=2")
    with Trainer(cfg, tmp_path / "run") as trainer:
        summary = trainer.train()
    assert summary["steps"] == 2
    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert 0.0 <= r["reward/iou_reward"] <= 1.0
        assert r["reward/total"] == pytest.approx(r["reward/iou_reward"] + r["reward/format"])


def test_what_a_trl_reward_receives_is_what_trl_passes(rec, tmp_path):
    """Keyword arguments only; conversational completions; the columns one entry per completion, with the
    record's own fields; the term's options; ``None`` counts 0."""
    seen = {}

    def fn(*, prompts, completions, solution, image_path, problem, scale, **kwargs):
        seen.update(prompts=prompts, completions=completions, solution=solution, image_path=image_path,
                    problem=problem, kwargs=kwargs)
        return [None if "none" in c[0]["content"] else scale for c in completions]

    samples = _sample(rec, tmp_path, n=1)
    samples[0].meta["accu_reward_method"] = "default"
    reward = ColumnsReward("t.py:fn", fn, {"scale": 0.25})
    out = reward([parse_response("a", "plain"), parse_response("none", "plain")], samples * 2, task=rec)
    assert out == [0.25, 0.0]
    assert seen["completions"] == [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "none"}]]
    assert seen["prompts"][0][0]["role"] == "user" and seen["prompts"][0][0]["content"][1]["text"] == samples[0].problem
    assert seen["solution"] == [samples[0].solution] * 2 and seen["image_path"] == [[samples[0].image]] * 2
    assert seen["kwargs"]["accu_reward_method"] == ["default", "default"]
    assert seen["kwargs"]["image_grid_thw"][0] == [1, samples[0].height / 14, samples[0].width / 14]
    assert "task" not in seen["kwargs"] and "frames" not in seen["kwargs"]

    texts = ColumnsReward("t.py:n", lambda completions, **kw: [float(len(c)) for c in completions], {},
                          completions="text")
    assert texts([parse_response("abc", "plain")], samples, task=rec) == [3.0]

    async def later(completions, **kwargs):
        await asyncio.sleep(0)
        return [1.0] * len(completions)

    assert ColumnsReward("t.py:later", later, {})([parse_response("x", "plain")], samples, task=rec) == [1.0]


def test_a_verl_compute_score_is_called_once_per_completion(rec, tmp_path):
    calls = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        calls.append((data_source, solution_str, ground_truth, extra_info["id"]))
        return {"score": 0.5, "acc": True} if "dict" in solution_str else 1.0

    samples = _sample(rec, tmp_path, n=1)
    reward = VerlReward("r.py:compute_score", compute_score, {})
    assert reward([parse_response("a dict", "plain"), parse_response("b", "plain")], samples * 2, task=rec) == [0.5, 1.0]
    assert calls[0] == ("rec", "a dict", samples[0].solution, samples[0].id)


REFUSED = '''
def needs_ids(completions, completion_ids, **kwargs):
    return [0.0] * len(completions)


def positional(completions, /, **kwargs):
    return [0.0] * len(completions)


def mixed(completions, samples, *, task):
    return [0.0] * len(completions)
'''


@pytest.mark.parametrize("name, fix", [
    ("needs_ids", "syngrpo does not pass ['completion_ids'] (TRL does); give it a default (completion_ids=None)"),
    ("positional", "make ['completions'] ordinary parameters: drop the '/' from the signature"),
    ("mixed", "mixes the two conventions"),
])
def test_a_reward_syngrpo_cannot_call_as_trl_does_is_refused_with_the_fix(tmp_path, name, fix):
    path = tmp_path / "refused.py"
    path.write_text(REFUSED, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        make_reward(get_registry(), f"{path}:{name}", {})
    assert fix in str(err.value)


def test_a_refused_reward_stops_syngrpo_check_which_loads_no_model(tmp_path):
    path = tmp_path / "refused.py"
    path.write_text(REFUSED, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "syngrpo.cli", "check", "--no-data", "--set",
                           f"rewards.terms=[{{name: format}}, {{name: '{path}:needs_ids'}}]"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "completion_ids=None" in proc.stderr
