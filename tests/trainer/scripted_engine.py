"""A scripted rollout engine and a reward with known values: what the trainer-wiring tests are built on.

``ScriptedRollouts`` is a real rollout-engine plugin (registered through the plugin registry like
``hf`` or ``vllm``) that returns completions a test writes instead of sampling them, so that every
reward of a step is known before the step runs.  It is a test double only for the sampler, the one
part whose output a test cannot fix in advance; the trainer still scores the scripted token ids
with the real tiny Qwen2.5-VL policy, takes a real optimizer step and talks to the real in-process
data server.

``WrittenReward`` (registered as ``written``) scores a completion with the number it wrote in its
``<think>`` (``<think>r=0.25</think>`` scores 0.25): a reward term whose value the test chooses per
completion, next to the real R_acc (IoU of the scripted box) and R_format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from syngrpo.data.images import load_rgb
from syngrpo.hookspecs import hookimpl
from syngrpo.models.rollout import Rollout
from syngrpo.models.scoring import completion_logprobs
from syngrpo.testing import registry_with

#: ``script(call, b, sample, frame) -> G completion texts``: ``call`` counts generate() calls from 1,
#: ``b`` is the prompt's position in the batch, ``frame`` maps the sample's image to the model's input
Script = Callable[[int, int, Any, Any], Sequence[str]]


def box_answer(frame: Any, solution: Any, acc: float) -> str:
    """An ``<answer>`` box (model-input frame) whose REC IoU with the label is ``acc``: 1, 0.5 or 0."""
    x1, y1, x2, y2 = frame.box(solution)
    boxes = {1: [x1, y1, x2, y2], 0.5: [x1, y1, (x1 + x2) / 2, y2], 0: [0.0, 0.0, 0.0, 0.0]}
    return "[" + ", ".join(repr(float(v)) for v in boxes[acc]) + "]"


def completion(frame: Any, solution: Any, *, acc: float, written: float = 0.0, score: float | None = None,
               description: str | None = None, trailing: str = "") -> str:
    """One completion: ``<think>r=written</think>``, then ``<score>``/``<description>`` when given, then the
    answer box with IoU ``acc``; ``trailing`` text after ``</answer>`` makes it ill-formed (R_format 0)."""
    parts = [f"<think>r={written}</think>"]
    if score is not None:
        parts.append(f"<score>{score}</score>")
    if description is not None:
        parts.append(f"<description>{description}</description>")
    parts.append(f"<answer>{box_answer(frame, solution, acc)}</answer>{trailing}")
    return "".join(parts)


class ScriptedRollouts:
    """Stand-in rollout engine: for each prompt, the G texts ``script`` writes for its sample.

    It finds each prompt's sample by its image (:func:`bind_samples` hands it the pool after
    ``setup``; a synthesized image that replaced its source is looked up there), tokenises the texts with the policy's own tokenizer (+ EOS) so the trainer can score
    them, and keeps every rollout it returned with the policy's log-probs of it *at sampling time*
    (``logp_before``), so a test can see which way one update moved them.
    """

    name = "scripted"

    def __init__(self, script: Script, bundle: Any = None, *, record_grads: bool = False) -> None:
        self.script = script
        self.record_grads = record_grads
        self.bundle = bundle
        self.by_image: dict[bytes, Any] = {}
        self.pool: Any = None  # the trainer's data pool (bind_samples), to find synthesized samples too
        self.calls = 0
        self.seen: list[list[str]] = []  # sample ids per call, in batch order
        self.rollouts: list[Rollout] = []
        self.logp_before: list[torch.Tensor] = []  # (N,) per call: mean token log-prob of each completion
        #: with ``record_grads``, per call and completion: the gradient of its mean token log-prob with respect
        #: to the policy's trainable parameters, flattened (the direction one update should move it along)
        self.grads: list[list[torch.Tensor]] = []

    def generate(self, bundle, batch, *, num_generations, temperature, top_p, max_new_tokens, generator_seed=None):
        self.calls += 1
        G = num_generations
        texts, ids, seen = [], [], []
        for b in range(batch.num_prompts):
            row = b * batch.group_size
            key = batch.images[row].tobytes()
            if key not in self.by_image and self.pool is not None:  # a synthesized image entered the pool
                self.by_image.update({load_rgb(s.image).tobytes(): s for s in self.pool.samples()})
            sample = self.by_image[key]
            seen.append(sample.id)
            written = list(self.script(self.calls, b, sample, batch.frames[row]))
            assert len(written) == G, f"the script wrote {len(written)} completions for a group of {G}"
            for text in written:
                texts.append(text)
                ids.append(bundle.tokenizer(text, add_special_tokens=False)["input_ids"] + [bundle.eos_token_ids[0]])
        self.seen.append(seen)
        T = max(len(row) for row in ids)
        completion_ids = torch.full((len(ids), T), bundle.pad_token_id, dtype=torch.long)  # (N, T)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for r, row in enumerate(ids):
            completion_ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        prompts = batch.collapse()
        rollout = Rollout(completion_ids=completion_ids, completion_mask=mask, texts=texts,
                          prompt_index=torch.arange(prompts.num_rows).repeat_interleave(G), batch=prompts.expand(G),
                          group_size=G)
        self.rollouts.append(rollout)
        self.logp_before.append(sequence_logprobs(bundle.model, rollout).detach())
        if self.record_grads:
            params = [p for p in bundle.model.parameters() if p.requires_grad]
            logp = sequence_logprobs(bundle.model, rollout, grad=True)  # (N,)
            per_completion = []
            for lp in logp:
                grads = torch.autograd.grad(lp, params, retain_graph=True, allow_unused=True)
                per_completion.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                                 for p, g in zip(params, grads, strict=True)]))
            self.grads.append(per_completion)
        return rollout

    def sync_weights(self, model: Any) -> None:
        """Nothing: the script does not depend on the weights."""

    def close(self) -> None:
        """Nothing to release."""


def sequence_logprobs(model: Any, rollout: Rollout, *, grad: bool = False) -> torch.Tensor:
    """(N,) mean token log-prob of each completion of ``rollout`` under ``model`` (eq. 1's per-sequence mean)."""
    with torch.set_grad_enabled(grad):
        logp, _ = completion_logprobs(model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                      group_size=rollout.group_size)  # (N, T)
    mask = rollout.completion_mask.to(logp.dtype)
    return (logp * mask).sum(-1) / mask.sum(-1)


class WrittenReward:
    """A test reward: the number a completion wrote in its ``<think>`` as ``r=<number>`` (else 0)."""

    pattern = re.compile(r"r=([0-9.]+)")

    def __call__(self, responses, samples, *, task, frames=None):
        out = []
        for r in responses:
            found = self.pattern.search(r.think or "")
            out.append(float(found.group(1)) if found else 0.0)
        return out


class ScriptedPlugin:
    """Registers ``scripted`` (the engine, built around ``script``) and the ``written`` reward."""

    def __init__(self, script: Script, *, record_grads: bool = False) -> None:
        self.script = script
        self.record_grads = record_grads
        self.engine: ScriptedRollouts | None = None

    @hookimpl
    def register_rollout_engines(self, register):
        def make(bundle=None, **options):
            self.engine = ScriptedRollouts(self.script, bundle, record_grads=self.record_grads)
            return self.engine

        register("scripted", make, description="scripted completions (trainer wiring tests)")

    @hookimpl
    def register_rewards(self, register):
        register("written", lambda **options: WrittenReward(), description="test reward: r=<x> in <think>")


def scripted_registry(script: Script, *, record_grads: bool = False) -> tuple[Any, ScriptedPlugin]:
    """The installed plugins plus ``scripted`` and ``written``; the plugin holds the engine once built."""
    plugin = ScriptedPlugin(script, record_grads=record_grads)
    return registry_with(plugin, autoload=True), plugin


def bind_samples(trainer: Any, engine: ScriptedRollouts) -> dict[str, Any]:
    """After ``setup``: let the engine find each prompt's sample by its image; returns the samples by id."""
    by_id = {s.id: s for s in trainer.pool.samples()}
    engine.by_image = {load_rgb(s.image).tobytes(): s for s in by_id.values()}
    engine.pool = trainer.pool
    return by_id
