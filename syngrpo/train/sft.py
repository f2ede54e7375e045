"""Supervised warm start: teach a policy the response format on a task's own labels.

A freshly built tiny policy writes noise, so every reward of a group is 0 and
GRPO has nothing to learn from.  A short SFT on well-formed responses whose
``<answer>`` is the reference label (paper §3.3.2's format, and the paper's
SFT baseline) makes the policy write parsable answers before RL starts.

The target answer is written in the *model-input* frame (the processor resizes
images to its patch grid), exactly where the policy's own boxes will be read;
the task maps them back with ``frame.inverse()`` when scoring.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from syngrpo.data.images import load_sample_images
from syngrpo.models.corpus import SCENES
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import ResponseMode, build_instruction, render_response
from syngrpo.perception.task import Task
from syngrpo.rundir.progress import Progress
from syngrpo.types import Sample

log = logging.getLogger(__name__)

#: the <think> part of every SFT target: short, so the warm start spends its steps on the answer
SFT_THINK = "I look at the image and find the answer."


def _integers(value: Any) -> Any:
    """Pixel coordinates written as integers (as Qwen-VL writes them); other values unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return int(round(value))
    if isinstance(value, (list, tuple)):
        return [_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    return value


def answer_text(task: Task, solution: Any) -> str:
    """The answer text of a label: the task's ``format_answer`` when it has one, else JSON."""
    fmt = getattr(task, "format_answer", None)
    return fmt(solution) if callable(fmt) else json.dumps(solution)


def sft_targets(task: Task, sample: Sample, mode: ResponseMode = "syn", *,
                frame: ImageTransform | None = None) -> str:
    """A well-formed response whose answer is ``sample``'s label in the model-input frame ``frame``.

    In ``syn`` mode it also holds a ``<score>`` and a background ``<description>``
    drawn from a small vocabulary; both are chosen from the sample id, so a
    sample's target is the same in every run.
    """
    solution = task.transform_solution(sample.solution, frame) if frame is not None else sample.solution
    answer = answer_text(task, _integers(solution))
    if mode == "plain":
        return render_response(SFT_THINK, answer, mode="plain")
    rng = random.Random(f"syngrpo-sft:{sample.id}")
    score = round(rng.uniform(0.0, 0.6), 2)
    description = f"the same objects in {rng.choice(SCENES)}"
    return render_response(SFT_THINK, answer, score=score, description=description, mode="syn")


def target_tokens(bundle: Any, texts: Sequence[str]):
    """(N, T) ids of ``texts`` each followed by the end-of-turn token, right-padded, and the (N, T) mask."""
    ids, mask, _ = _target_tokens_and_answer(bundle, texts)
    return ids, mask


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span of what lies between ``<answer>`` and ``</answer>`` in ``text`` (None without both tags)."""
    start = text.find("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    return (start, end) if end >= 0 else None


def _target_tokens_and_answer(bundle: Any, texts: Sequence[str]):
    """``target_tokens`` plus an (N, T) 0/1 mask of the tokens that overlap each text's answer span."""
    import torch

    tok = bundle.tokenizer
    end = bundle.eos_token_ids[0]
    enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    rows = [list(r) + [end] for r in enc["input_ids"]]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), bundle.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    answer = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (r, offsets, text) in enumerate(zip(rows, enc["offset_mapping"], texts, strict=True)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
        span = answer_span(text)
        if span is not None:
            for j, (a, b) in enumerate(offsets):
                if a < span[1] and b > span[0]:  # the token holds answer characters (BPE may glue a tag on)
                    answer[i, j] = 1
    return ids.to(bundle.device), mask.to(bundle.device), answer.to(bundle.device)


def sft_loss(bundle: Any, task: Task, samples: Sequence[Sample], mode: ResponseMode = "syn", *,
             images: Sequence[Any] | None = None, answer_weight: float = 1.0):
    """Mean negative log-likelihood of the SFT targets over completion tokens only (prompt tokens excluded).

    ``answer_weight`` multiplies the loss of the tokens inside ``<answer>…</answer>`` (a
    weighted mean): the answer is a handful of tokens among the 30-70 of a formatted
    response, and a small policy otherwise spends its warm start on the text it
    already writes (docs/study.md).
    """
    from syngrpo.models.policy import encode_prompts
    from syngrpo.models.scoring import completion_logprobs

    images = list(images) if images is not None else [load_sample_images(s) for s in samples]
    texts = [build_instruction(task.question(s), mode) for s in samples]
    batch = encode_prompts(bundle, images, texts, box_images=[s.box_image for s in samples])
    targets = [sft_targets(task, s, mode, frame=f) for s, f in zip(samples, batch.frames, strict=True)]
    ids, mask, answer = _target_tokens_and_answer(bundle, targets)
    logp, _ = completion_logprobs(bundle.model, batch, ids, mask, group_size=1)
    weight = mask.to(logp.dtype) + (float(answer_weight) - 1.0) * (answer * mask).to(logp.dtype)
    return -(logp * weight).sum() / weight.sum().clamp(min=1)


def run_sft(
    bundle: Any,
    task: Task,
    samples: Sequence[Sample],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    mode: ResponseMode = "syn",
    seed: int = 0,
    progress: bool = True,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
    max_grad_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    answer_weight: float = 1.0,
    precision: Any | None = None,
    progress_interval_s: float | None = None,
    desc: str = "sft",
) -> dict[str, Any]:
    """``steps`` AdamW steps of :func:`sft_loss` on batches drawn (epoch by epoch, shuffled) from ``samples``.

    ``precision`` (a :class:`syngrpo.scale.precision.Precision`; default: float32) runs the forward in
    its compute dtype over the model's float32 weights, as RL does.

    Returns ``{"steps", "loss_first", "loss_last", "loss_mean_last10", "losses", "seconds"}``;
    ``log_fn(step, {"sft/loss", "sft/grad_norm", "sft/lr"})`` is called after every step.
    ``progress``: a bar on a terminal, else a plain line (``desc``: count, rate, ETA, loss) at least
    every ``progress_interval_s`` seconds (:class:`~syngrpo.rundir.progress.Progress`).
    The global RNGs are not touched (shuffling uses its own ``random.Random(seed)``).
    """
    import torch

    if not samples:
        raise ValueError("run_sft needs at least one sample")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1 (got {steps}, {batch_size})")
    if not answer_weight > 0:
        raise ValueError(f"answer_weight must be > 0, got {answer_weight}")
    from syngrpo.scale.precision import Precision

    precision = precision or Precision()
    model = bundle.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    order: list[int] = []
    images: dict[int, Any] = {}
    losses: list[float] = []
    bar = Progress(desc, steps, enabled=progress, interval_s=progress_interval_s)
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            if len(order) < batch_size:
                perm = list(range(len(samples)))
                rng.shuffle(perm)
                order.extend(perm)
            idx, order = order[:batch_size], order[batch_size:]
            for i in idx:
                if i not in images:
                    images[i] = load_sample_images(samples[i])
            with precision.autocast():
                loss = sft_loss(bundle, task, [samples[i] for i in idx], mode, images=[images[i] for i in idx],
                                answer_weight=answer_weight)
            optimizer.zero_grad(set_to_none=True)
            precision.backward(loss)
            grad_norm = precision.clip_and_step(optimizer, params, max_grad_norm)
            value = float(loss.detach())
            losses.append(value)
            if log_fn is not None:
                log_fn(step, {"sft/loss": value, "sft/grad_norm": grad_norm, "sft/lr": lr})
            bar.update(1, {"loss": value})
    finally:
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - start
    stats = {
        "steps": steps,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "loss_mean_last10": sum(losses[-10:]) / len(losses[-10:]) if losses else float("nan"),
        "losses": losses,
        "seconds": seconds,
    }
    (log.debug if progress else log.info)("SFT: %d steps in %.1f s, loss %.3f -> %.3f", steps, seconds,
                                          stats["loss_first"], stats["loss_last"])
    return stats
