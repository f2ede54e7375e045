"""The rollout correction's weights and metrics equal TRL 1.16's ``vllm_importance_sampling_correction`` code.

TRL computes the ratio inline, inside ``GRPOTrainer._generate_and_score_completions`` (it needs a model, a
vLLM engine and a batch to run).  The test takes that method's source from the installed TRL, cuts out the
block that turns the two log-probs into the ratio (from ``mask = completion_mask ...`` to the comment that
starts the reference model's pass) and the lines that pick the values its metrics read, and runs them
unchanged on the test's tensors.  Nothing is rewritten: if TRL's block changes shape, the cut fails loudly.
How the weights then enter the loss is compared in ``test_policy_losses_vs_peers.py``.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from types import SimpleNamespace

import pytest
import torch

from syngrpo.algo.rollout_correction import MODES, CorrectionStats, counted, importance_weights

RATIO_START = "mask = completion_mask if tool_mask is None else completion_mask * tool_mask\n"
RATIO_ANCHOR = "per_token_logps_diff = (old_per_token_logps - sampling_per_token_logps) * mask"
RATIO_END = "# Compute the per-token log probabilities for the reference model"
METRIC_START = "if sequence_level_is:\n"
METRIC_ANCHOR = "flat_is_ratio = vllm_importance_sampling_ratio.flatten()"


def _cut(source: str, start: str, anchor: str, end: str | None = None, *, lines: int | None = None) -> str:
    at = source.index(anchor)
    begin = source.rindex(start, 0, at)
    begin = source.rindex("\n", 0, begin) + 1  # from the start of that line
    if end is not None:
        stop = source.index(end, at)
    else:
        stop = begin
        for _ in range(lines):
            stop = source.index("\n", stop) + 1
    return textwrap.dedent(source[begin:stop])


@pytest.fixture(scope="module")
def trl_blocks(trl_grpo):
    source = inspect.getsource(trl_grpo.GRPOTrainer._generate_and_score_completions)
    ratio = _cut(source, RATIO_START, RATIO_ANCHOR, RATIO_END)
    metric = _cut(source, METRIC_START, METRIC_ANCHOR, lines=4)
    assert "vllm_importance_sampling_ratio = torch.exp(logps_diff)" in ratio and "flat_is_ratio" in metric
    return ratio, metric


def _tensors(seed: int):
    g = torch.Generator().manual_seed(seed)
    trainer = -torch.rand(5, 6, generator=g) * 2
    sampler = trainer + 0.4 * torch.randn(5, 6, generator=g)  # a gap wide enough to cross every bound below
    sampler[2, 1] = math.nan  # vLLM could not score this token: TRL counts it as no difference
    mask = (torch.arange(6).unsqueeze(0) < torch.tensor([6, 2, 4, 5, 1]).unsqueeze(1)).float()
    return trainer, sampler, mask


def _trl(blocks, trainer, sampler, mask, mode, clip_min, clip_max):
    ratio_block, metric_block = blocks
    ns = {"self": SimpleNamespace(vllm_importance_sampling_mode=mode, vllm_importance_sampling_clip_min=clip_min,
                                  vllm_importance_sampling_clip_max=clip_max),
          "completion_mask": mask, "tool_mask": None, "old_per_token_logps": trainer,
          "sampling_per_token_logps": sampler}
    exec(ratio_block, {"torch": torch, "math": math}, ns)  # noqa: S102 - TRL's own lines, see the module doc
    ns["mask"] = mask.bool()  # what TRL's metric lines index with
    exec(metric_block, {"torch": torch}, ns)  # noqa: S102
    return ns["vllm_importance_sampling_ratio"], ns["flat_is_ratio"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("clip_min", "clip_max"), [(None, 3.0), (0.8, 1.25), (0.9, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_weights_and_metrics_equal_trl(trl_blocks, mode, clip_min, clip_max, seed):
    trainer, sampler, mask = _tensors(seed)
    ours, outside = importance_weights(trainer, sampler, mask, mode=mode, clip_min=clip_min, clip_max=clip_max)
    theirs, flat = _trl(trl_blocks, trainer, sampler, mask, mode, clip_min, clip_max)
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= 1e-6
    assert torch.equal(counted(ours, mask), flat)  # the values TRL's importance_sampling_ratio/* metrics read
    stats = CorrectionStats()
    stats.add(ours, outside, mask)
    m = stats.metrics()
    assert m["rollout_is/weight_mean"] == pytest.approx(float(flat.mean()), rel=1e-6)
    assert (m["rollout_is/weight_min"], m["rollout_is/weight_max"]) == (float(flat.min()), float(flat.max()))
    if clip_max == 1.25:  # the bounds bit: a test that never truncates or masks would prove less
        assert 0 < m["rollout_is/outside_frac"] < 1
