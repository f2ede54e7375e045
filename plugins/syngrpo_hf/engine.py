"""The ``hf`` rollout engine: transformers ``generate`` on the policy being trained.

It samples from the policy's own weights, so there is nothing to sync after an
update.  Sampling settings are set explicitly on a fresh ``GenerationConfig``:
real Qwen2.5-VL checkpoints ship a ``generation_config.json`` with
``top_k=1, top_p=0.001, repetition_penalty=1.05``, which ``generate`` would
otherwise fill in and which would make all G samples of a group identical
(every advantage zero).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from syngrpo.models.policy import PolicyBundle, PromptBatch
from syngrpo.models.rollout import Rollout, completion_mask_from_ids, completion_mask_truncated

#: temperatures at or below this decode greedily
GREEDY_TEMPERATURE = 1e-5


class HFRolloutEngine:
    """Sample G completions per prompt with ``model.generate`` (vision special tokens suppressed).

    Options: ``return_logprobs`` (also return the sampling log-probs of the chosen
    tokens, from the raw logits divided by the temperature; costs N x T x V
    memory), ``top_k`` (0 = off), ``repetition_penalty`` (1.0 = off).
    """

    name = "hf"

    def __init__(self, bundle: PolicyBundle | None = None, *, return_logprobs: bool = False, top_k: int = 0,
                 repetition_penalty: float = 1.0, **options: Any) -> None:
        if options:
            from syngrpo.errors import ConfigError

            raise ConfigError(f"unknown option(s) of the hf rollout engine: {sorted(options)}; "
                              "known: return_logprobs, top_k, repetition_penalty")
        self.bundle = bundle
        self.return_logprobs = return_logprobs
        self.top_k = int(top_k)
        self.repetition_penalty = float(repetition_penalty)

    def generation_config(self, bundle: PolicyBundle, *, num_generations: int, temperature: float, top_p: float,
                          max_new_tokens: int):
        from transformers import GenerationConfig

        greedy = temperature <= GREEDY_TEMPERATURE
        sampling = {} if greedy else {"temperature": float(temperature), "top_p": float(top_p), "top_k": self.top_k}
        return GenerationConfig(
            do_sample=not greedy,
            **sampling,
            repetition_penalty=self.repetition_penalty,
            num_beams=1,
            # greedy samples are identical: decode once per prompt and repeat (generate refuses more)
            num_return_sequences=1 if greedy else num_generations,
            max_new_tokens=int(max_new_tokens),
            min_new_tokens=0,
            eos_token_id=list(bundle.eos_token_ids),
            pad_token_id=bundle.pad_token_id,
            suppress_tokens=list(bundle.suppress_token_ids) or None,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=self.return_logprobs,
        )

    def generate(self, bundle: PolicyBundle | None, batch: PromptBatch, *, num_generations: int,
                 temperature: float, top_p: float, max_new_tokens: int,
                 generator_seed: int | None = None) -> Rollout:
        bundle = bundle or self.bundle
        if bundle is None:
            raise ValueError("the hf rollout engine needs a policy bundle (pass bundle=...)")
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        prompts = batch.collapse().to(bundle.device)
        G = int(num_generations)
        cfg = self.generation_config(bundle, num_generations=G, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_new_tokens)
        model = bundle.model
        was_training = model.training
        model.eval()
        rng = contextlib.nullcontext()
        if generator_seed is not None:
            devices = [bundle.device] if bundle.device.type == "cuda" else []
            rng = torch.random.fork_rng(devices=devices)
        try:
            with rng, torch.no_grad():
                if generator_seed is not None:
                    torch.manual_seed(int(generator_seed))
                inputs = prompts.model_inputs()
                if cfg.num_return_sequences > 1 and (not _expands_pixels(model) or prompts.max_images > 1):
                    # generate's generic expansion would interleave patches, not images: expand ourselves.  With
                    # several images per prompt it also repeat_interleaves image_grid_thw image by image ([A, B] ->
                    # [A, A, B, B] where the expanded rows need [A, B, A, B]), and a family that recomputes its 3-D
                    # positions from that grid in the forward (GLM-4.1V, transformers 5.25) samples at wrong
                    # positions (log-probs off by ~0.1 against the scorer on the tiny model): expand ourselves too
                    inputs = prompts.expand(G).model_inputs()
                    cfg.num_return_sequences = 1
                # an FSDP policy arrives with its shards gathered (Parallel.full_weights): no per-token sync
                extra = {"synced_gpus": False} if _fsdp_managed(model) else {}
                out = model.generate(**inputs, generation_config=cfg, **extra)
        finally:
            model.train(was_training)

        P = prompts.prompt_length
        completion_ids = out.sequences[:, P:]  # (N, T), or (B, T) when greedy
        raw_logits = list(out.logits) if self.return_logprobs else []
        if completion_ids.shape[0] != prompts.num_rows * G:  # greedy: one decode per prompt, repeated G times
            completion_ids = completion_ids.repeat_interleave(G, dim=0)
            raw_logits = [step.repeat_interleave(G, dim=0) for step in raw_logits]
        mask = completion_mask_from_ids(completion_ids, bundle.eos_token_ids)
        completion_ids = completion_ids.masked_fill(mask == 0, bundle.pad_token_id)
        logprobs = None
        if self.return_logprobs:
            logits = torch.stack(raw_logits, dim=1).float()  # (N, T, V) raw, before any processor
            if temperature > GREEDY_TEMPERATURE:
                logits = logits / float(temperature)
            logprobs = torch.log_softmax(logits, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
            logprobs = logprobs * mask
        B = prompts.num_rows
        return Rollout(
            completion_ids=completion_ids,
            completion_mask=mask,
            texts=bundle.decode(completion_ids, mask),
            prompt_index=torch.arange(B, device=completion_ids.device).repeat_interleave(G),
            batch=prompts.expand(G),
            group_size=G,
            logprobs=logprobs,
            truncated=completion_mask_truncated(completion_ids, mask, bundle.eos_token_ids),
        )

    def sync_weights(self, model: Any) -> None:
        """Nothing to do: ``generate`` runs on the policy's own weights."""

    def close(self) -> None:
        """Nothing to release."""


def _fsdp_managed(model: Any) -> bool:
    """True for a policy sharded by FSDP2 (transformers would otherwise sync every decoding step over ranks)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch built without distributed
        return False
    return isinstance(model, FSDPModule)


def _expands_pixels(model: Any) -> bool:
    """True when ``generate`` encodes images once and expands the features per image (transformers >= 5.2x).

    Older versions expand every input tensor row by row, which repeats patches instead of images.
    """
    supports = getattr(model, "_supports_mm_encoder_outputs", None)
    return hasattr(model, "_expand_multimodal_outputs") and callable(supports) and bool(supports())
