"""SFT warm start: targets in the model-input frame, loss on completion tokens only, format learned."""

from __future__ import annotations

import json

import pytest
import torch

from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response
from syngrpo.train.sft import _target_tokens_and_answer, answer_span, run_sft, sft_loss, sft_targets, target_tokens


@pytest.fixture(scope="module")
def rec():
    from syngrpo.plugins import get_registry

    return get_registry().create("tasks", "rec")


@pytest.fixture(scope="module")
def toy(rec, tmp_path_factory):
    return rec.make_toy_dataset(tmp_path_factory.mktemp("rec-toy"), n=24, seed=0)


def test_sft_target_is_well_formed_and_its_answer_is_the_label_in_the_model_frame(rec, toy):
    sample = toy[0]
    frame = ImageTransform.resize(sample.width, sample.height, 2 * sample.width, 2 * sample.height)
    text = sft_targets(rec, sample, "syn", frame=frame)
    parsed = parse_response(text, "syn")
    assert parsed.well_formed and 0.0 <= parsed.score <= 1.0 and parsed.description
    box = rec.parse_answer(parsed.answer)
    assert list(box) == [round(2 * v) for v in sample.solution]
    # mapped back through the frame, the answer scores a perfect IoU against the original label
    assert rec.accuracy(box, sample, frame=frame) == pytest.approx(1.0)
    assert sft_targets(rec, sample, "syn", frame=frame) == text  # the same sample always gets the same target


def test_plain_sft_targets_have_only_think_and_answer(rec, toy):
    parsed = parse_response(sft_targets(rec, toy[1], "plain"), "plain")
    assert parsed.well_formed and parsed.score is None and parsed.description is None
    assert rec.parse_answer(parsed.answer) == pytest.approx(tuple(toy[1].solution))


def test_sft_loss_counts_completion_tokens_only(policy, rec, toy):
    """Against transformers' own loss with the prompt positions labelled -100."""
    from syngrpo.data.images import load_rgb
    from syngrpo.models.policy import encode_prompts
    from syngrpo.perception.response import build_instruction

    samples = toy[:2]
    images = [load_rgb(s.image) for s in samples]
    with torch.no_grad():
        ours = sft_loss(policy, rec, samples, "syn", images=images)
        batch = encode_prompts(policy, images, [build_instruction(rec.question(s), "syn") for s in samples])
        ids, mask = target_tokens(policy, [sft_targets(rec, s, "syn", frame=f) for s, f in zip(samples, batch.frames, strict=True)])
        labels = torch.cat([torch.full_like(batch.input_ids, -100), ids.masked_fill(mask == 0, -100)], 1)
        out = policy.model(
            input_ids=torch.cat([batch.input_ids, ids], 1),
            attention_mask=torch.cat([batch.attention_mask, mask], 1),
            pixel_values=batch.pixel_values, image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=torch.cat([batch.mm_token_type_ids, torch.zeros_like(ids)], 1),
            labels=labels,
        )
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_the_answer_mask_covers_exactly_the_answer_tokens(policy, rec, toy):
    texts = [sft_targets(rec, s, mode) for s in toy[:3] for mode in ("syn", "plain")]
    ids, mask, answer = _target_tokens_and_answer(policy, texts)
    for row, text in enumerate(texts):
        start, end = answer_span(text)
        inside = [int(t) for t, a in zip(ids[row], answer[row], strict=True) if a]
        decoded = policy.tokenizer.decode(inside)
        # every answer character is covered; at most a glued tag piece ("<answer>[" is one BPE token here) is extra
        assert text[start:end] in decoded and len(decoded) <= (end - start) + len("></answer>")
        assert all(mask[row][answer[row] == 1] == 1)
    assert answer_span("no tags here") is None and answer_span("<answer>1") is None


def test_answer_weight_is_a_weighted_mean_of_the_token_losses(policy, rec, toy):
    """By hand from the per-token log-probs; weight 1 is the plain mean."""
    from syngrpo.data.images import load_rgb
    from syngrpo.models.policy import encode_prompts
    from syngrpo.models.scoring import completion_logprobs
    from syngrpo.perception.response import build_instruction

    samples = toy[:2]
    images = [load_rgb(s.image) for s in samples]
    with torch.no_grad():
        batch = encode_prompts(policy, images, [build_instruction(rec.question(s), "syn") for s in samples])
        texts = [sft_targets(rec, s, "syn", frame=f) for s, f in zip(samples, batch.frames, strict=True)]
        ids, mask, answer = _target_tokens_and_answer(policy, texts)
        logp, _ = completion_logprobs(policy.model, batch, ids, mask, group_size=1)
        nll_answer = -(logp * answer).sum().item()
        nll_rest = -(logp * mask * (1 - answer)).sum().item()
        n_answer, n_rest = answer.sum().item(), (mask * (1 - answer)).sum().item()
        for w in (1.0, 10.0, 0.5):
            expected = (w * nll_answer + nll_rest) / (w * n_answer + n_rest)
            got = sft_loss(policy, rec, samples, "syn", images=images, answer_weight=w).item()
            assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="answer_weight"):
        run_sft(policy, rec, toy, steps=1, lr=1e-3, batch_size=2, answer_weight=0.0)


def test_one_sft_step_changes_the_parameters(fresh_policy, rec, toy):
    before = {n: p.detach().clone() for n, p in fresh_policy.model.named_parameters()}
    seen = []
    stats = run_sft(fresh_policy, rec, toy, steps=1, lr=1e-3, batch_size=2, mode="syn", progress=False,
                    log_fn=lambda step, values: seen.append((step, values)))
    changed = [n for n, p in fresh_policy.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)  # every parameter, the vision tower included, got a gradient
    assert stats["steps"] == 1 and stats["loss_first"] > 0
    assert seen[0][0] == 1 and set(seen[0][1]) == {"sft/loss", "sft/grad_norm", "sft/lr"}


def test_a_short_sft_teaches_the_response_format(fresh_policy, rec, toy):
    from syngrpo_hf.engine import HFRolloutEngine

    from syngrpo.data.images import load_rgb
    from syngrpo.models.policy import encode_prompts
    from syngrpo.train.evaluate import build_prompts

    stats = run_sft(fresh_policy, rec, toy, steps=80, lr=3e-3, batch_size=8, mode="syn", seed=0, progress=False)
    assert stats["loss_last"] < stats["loss_first"] / 4
    held_out = toy[:8]
    batch = encode_prompts(fresh_policy, [load_rgb(s.image) for s in held_out], build_prompts(rec, held_out, "syn"))
    rollout = HFRolloutEngine().generate(fresh_policy, batch, num_generations=1, temperature=0.0, top_p=1.0,
                                         max_new_tokens=80)
    parsed = [parse_response(t, "syn") for t in rollout.texts]
    assert sum(p.well_formed for p in parsed) >= 7, rollout.texts


def test_sft_command_saves_a_model_that_loads(tiny_policy_dir, tmp_path):
    from syngrpo.cli import main
    from syngrpo.models.policy import load_policy

    config = tmp_path / "sft.yaml"
    config.write_text(
        f"model:\n  policy: {tiny_policy_dir}\n  dtype: float32\n  device: cpu\n"
        "data:\n  task: rec\n  toy: {n_train: 6, n_eval: 2, image_size: 112}\n"
        "synthesis:\n  mode: off\n"
        "sft:\n  steps: 2\n  lr: 1.0e-3\n  batch_size: 3\n"
    )
    out = tmp_path / "out"
    assert main(["sft", "-c", str(config), "--out", str(out), "--no-progress"]) == 0
    lines = (out / "sft_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    stats = json.loads((out / "sft_stats.json").read_text())
    assert stats["steps"] == 2 and stats["response_mode"] == "plain" and stats["samples"] == 6
    bundle = load_policy(out / "model")
    original = load_policy(tiny_policy_dir)
    assert any(not torch.equal(a, b) for a, b in zip(bundle.model.parameters(), original.model.parameters(), strict=True))
