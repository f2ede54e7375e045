"""The ``hf`` rollout engine: transformers ``generate`` on the policy being trained.

It samples from the policy's own weights, so there is nothing to sync after an
update.  Sampling settings are set explicitly on a fresh ``GenerationConfig``:
real Qwen2.5-VL checkpoints ship a ``generation_config.json`` with
``top_k=1, top_p=0.001, repetition_penalty=1.05``, which ``generate`` would
otherwise fill in and which would make all G samples of a group identical
(every advantage zero).

Shared prefix (issue 26 item 5).  ``generate(num_return_sequences=G)`` expands the prompts to B x G rows
before the prefill (transformers 5.2x encodes each image once and repeats the features; older versions
expand the pixels, so the vision tower runs G times too), so each prompt's prefill -- for a VLM mostly image
tokens -- runs G times.  For the families whose scoring has the shared-prefix path (3-D rotary positions
from ``get_rope_index``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V) the engine instead runs the vision tower
and the prefill once per prompt, repeats the prompt's KV cache G times and decodes the B x G rows itself
(:func:`sample_shared_prefix`).  Every step sees the logits ``generate`` would compute for the same prefix
(to float rounding), processed as ``generate`` processes them (transformers' own processors, in its order).
Tokens are drawn by inverse-CDF sampling (:func:`sample_tokens`: one uniform per row from the global RNG),
the same distribution as ``generate``'s ``torch.multinomial`` but not the same random stream: a
``generator_seed`` still repeats a rollout exactly, but gives other completions than ``generate`` gave for
that seed before.  The KV cache is the one ``generate`` builds (B x G rows of prompt + completion); the
prefill's activations are B rows instead of B x G.  ``shared_prefix: false`` (engine option) keeps
``generate``; families without the path (InternVL) always use it.
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
    memory), ``top_k`` (0 = off), ``repetition_penalty`` (1.0 = off),
    ``shared_prefix`` (default true: one vision + prefill pass per prompt where the family allows it,
    see the module doc; false: transformers ``generate`` on G copies of each prompt).
    """

    name = "hf"

    def __init__(
        self,
        bundle: PolicyBundle | None = None,
        *,
        return_logprobs: bool = False,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        shared_prefix: bool = True,
        **options: Any,
    ) -> None:
        if options:
            from syngrpo.errors import ConfigError

            raise ConfigError(
                f"unknown option(s) of the hf rollout engine: {sorted(options)}; "
                "known: return_logprobs, top_k, repetition_penalty, shared_prefix"
            )
        self.bundle = bundle
        self.return_logprobs = return_logprobs
        self.top_k = int(top_k)
        self.repetition_penalty = float(repetition_penalty)
        self.shared_prefix = bool(shared_prefix)

    def generation_config(
        self, bundle: PolicyBundle, *, num_generations: int, temperature: float, top_p: float, max_new_tokens: int
    ):
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

    def generate(
        self,
        bundle: PolicyBundle | None,
        batch: PromptBatch,
        *,
        num_generations: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        generator_seed: int | None = None,
    ) -> Rollout:
        bundle = bundle or self.bundle
        if bundle is None:
            raise ValueError("the hf rollout engine needs a policy bundle (pass bundle=...)")
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        prompts = batch.collapse().to(bundle.device)
        G = int(num_generations)
        cfg = self.generation_config(
            bundle, num_generations=G, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens
        )
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
                if self.uses_shared_prefix(bundle):
                    completion_ids, raw_logits = sample_shared_prefix(model, prompts, cfg)
                else:
                    inputs = prompts.model_inputs()
                    if cfg.num_return_sequences > 1 and (not _expands_pixels(model) or prompts.max_images > 1):
                        # generate's generic expansion would interleave patches, not images: expand ourselves.  With
                        # several images per prompt it also repeat_interleaves image_grid_thw image by image ([A, B]
                        # -> [A, A, B, B] where the expanded rows need [A, B, A, B]), and a family that recomputes
                        # its 3-D positions from that grid in the forward (GLM-4.1V, transformers 5.25) samples at
                        # wrong positions (log-probs off by ~0.1 against the scorer on the tiny model): expand
                        # ourselves too
                        inputs = prompts.expand(G).model_inputs()
                        cfg.num_return_sequences = 1
                    # an FSDP policy arrives with its shards gathered (Parallel.full_weights): no per-token sync
                    extra = {"synced_gpus": False} if _fsdp_managed(model) else {}
                    out = model.generate(**inputs, generation_config=cfg, **extra)
                    completion_ids = out.sequences[:, prompts.prompt_length :]  # (N, T), or (B, T) when greedy
                    raw_logits = list(out.logits) if self.return_logprobs else []
        finally:
            model.train(was_training)

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

    def uses_shared_prefix(self, bundle: PolicyBundle) -> bool:
        """True when :meth:`generate` runs each prompt's vision tower and prefill once (module doc)."""
        from syngrpo.models.scoring import supports_shared_prefix

        return self.shared_prefix and supports_shared_prefix(bundle.model, bundle.family)

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


class _SuppressTokens:
    """transformers' ``SuppressTokensLogitsProcessor`` (suppressed tokens get -inf) with the vocabulary mask
    built once instead of at every step (an ``isin`` over the vocabulary each call: ~8 % of a tiny model's step)."""

    def __init__(self, token_ids: Any, device: torch.device) -> None:
        self.token_ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=device)
        self.mask: torch.Tensor | None = None

    def __call__(self, input_ids: Any, scores: torch.Tensor) -> torch.Tensor:
        if self.mask is None or self.mask.shape[0] != scores.shape[-1]:
            vocab = torch.arange(scores.shape[-1], device=scores.device)
            self.mask = torch.isin(vocab, self.token_ids.to(scores.device))
        return scores.masked_fill(self.mask, -float("inf"))


def _logits_processors(cfg: Any, prompts: PromptBatch, rows_per_prompt: int) -> tuple[Any, bool]:
    """transformers' own processors for the settings the engine sets, in ``generate``'s order
    (``GenerationMixin._get_logits_processor``): repetition penalty, suppressed tokens, then, when sampling,
    temperature, top-k, top-p; and whether they read the token ids (the repetition penalty does)."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    device = prompts.input_ids.device
    processors = LogitsProcessorList()
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        # generate (transformers >= 5.2x) skips each row's left padding (the first position its attention mask
        # is 1); older versions take an int only, and their generate penalises the whole row, padding included
        padding = (prompts.attention_mask != 0).int().argmax(dim=1).repeat_interleave(rows_per_prompt)
        try:
            penalty = RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty, prompt_ignore_length=padding)
        except ValueError:
            penalty = RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty)
        processors.append(penalty)
    if cfg.suppress_tokens is not None:
        processors.append(_SuppressTokens(cfg.suppress_tokens, device=device))
    if cfg.do_sample:
        if cfg.temperature is not None and cfg.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k is not None and cfg.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=cfg.top_k, min_tokens_to_keep=1))
        if cfg.top_p is not None and cfg.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=cfg.top_p, min_tokens_to_keep=1))
    return processors, bool(processors) and isinstance(processors[0], RepetitionPenaltyLogitsProcessor)


def _flag_in_flight(unfinished: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """``unfinished.any()`` copied to the host without waiting for the device, and the event that says it landed."""
    if unfinished.device.type != "cuda":
        return unfinished.any(), None
    # the copy runs on the current stream of the flag's device, which need not be the current device (a
    # single-process run on cuda:1 never calls set_device): record there, or the event completes at once and
    # a pinned flag read before the copy lands says "every row ended"
    with torch.cuda.device(unfinished.device):
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(unfinished.any(), non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(unfinished.device))
    return flag, event


def sample_tokens(probs: torch.Tensor) -> torch.Tensor:
    """(N,) one token per row of (N, V) ``probs`` (rows need not sum to 1): inverse-CDF sampling with one
    uniform per row from the global RNG.

    The same distribution as ``torch.multinomial(probs, 1)`` (what ``generate`` calls), which on a CPU draws
    an exponential variate per vocabulary entry (0.2-0.6 ms a step for 12 rows of a 700-token vocabulary,
    ~60 ms for Qwen's 152k) where this draws N uniforms and sums in float64 (so the rounding of the CDF is
    ~1e-16 per entry).  A zero-probability token (a suppressed one) is never drawn: the chosen index is the
    first whose cumulative sum exceeds ``u * total`` with ``u < 1``, and a zero entry does not raise the sum.
    """
    cdf = probs.to(torch.float64).cumsum_(dim=-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, dtype=torch.float64, device=probs.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u * total rounded up to total
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def sample_shared_prefix(
    model: Any, prompts: PromptBatch, cfg: Any, *, choose: Any = sample_tokens, defer_stop: bool | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``generate``'s sampling loop with each prompt's vision tower and prefill run once (module doc).

    ``prompts``: B collapsed prompts; ``cfg``: the engine's :class:`~transformers.GenerationConfig`
    (``num_return_sequences`` = G rows per prompt).  Returns the (B * G, T) completion ids (padding after a
    row's EOS, T <= ``max_new_tokens``: the loop stops once every row has ended) and, when ``cfg.output_logits``,
    the T raw (B * G, V) float32 logits of each step.  Decoding steps feed the model explicit 3-D rotary
    positions (:func:`syngrpo.models.scoring.completion_position_ids`, the positions ``generate`` derives
    from its cached rope deltas) and the grown attention mask; rows that ended get the pad token and keep
    attending, as in ``generate``.  ``choose`` draws the tokens from the processed probabilities
    (:func:`sample_tokens`; tests replay given tokens through it).

    ``defer_stop`` (default: on a GPU) reads "has every row ended?" one step late, as ``generate`` does
    (its ``DeferredStopCheck``), so the host queues the next step instead of waiting for the device every
    step; the one step too many it may run is dropped, so the tokens, the completion mask and the truncation
    flags are the same either way (when every row ends one step before the token limit, the deferred run keeps
    one more all-pad column, masked out).
    """
    from syngrpo.models.scoring import (
        _cache_argument,
        _returned_cache,
        _token_type_keys,
        completion_position_ids,
    )

    G = int(cfg.num_return_sequences or 1)
    B = prompts.input_ids.shape[0]
    N, T = B * G, int(cfg.max_new_tokens)
    out = model(**prompts.model_inputs(), use_cache=True, logits_to_keep=1)
    cache = _returned_cache(out)
    if cache is None:
        raise RuntimeError(
            "the prompt forward returned no KV cache; set rollout.engine_options.shared_prefix: "
            "false to sample with transformers generate"
        )
    if G > 1:
        cache.batch_repeat_interleave(G)
    logits = out.logits[:, -1].to(dtype=torch.float32).repeat_interleave(G, dim=0)  # (N, V)
    del out
    device = logits.device
    positions = completion_position_ids(model, prompts, G, T).contiguous()  # (3, N, T)
    attention_mask = prompts.attention_mask.repeat_interleave(G, dim=0)
    types = {
        key: torch.zeros((N, 1), dtype=getattr(prompts, key).dtype, device=device) for key in _token_type_keys(prompts)
    }
    decode_step = _decoding_step(model, types, _cache_argument(model))
    processors, reads_ids = _logits_processors(cfg, prompts, G)
    sequences = prompts.input_ids.repeat_interleave(G, dim=0) if reads_ids else None  # prompt + sampled ids
    defer = device.type == "cuda" if defer_stop is None else bool(defer_stop)
    pending: tuple[int, torch.Tensor, Any] | None = None  # a step's "any row unfinished" flag, in flight
    eos = torch.tensor(list(cfg.eos_token_id), device=device)
    pad = torch.tensor(int(cfg.pad_token_id), device=device)
    unfinished = torch.ones(N, dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    raw: list[torch.Tensor] = []
    for t in range(T):
        if cfg.output_logits:
            raw.append(logits)
        scores = processors(sequences, logits) if processors else logits
        if cfg.do_sample:
            next_tokens = choose(torch.softmax(scores, dim=-1))
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, pad)
        tokens.append(next_tokens)
        if sequences is not None:
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
        unfinished &= ~torch.isin(next_tokens, eos)
        if t == T - 1:
            break
        if not defer:
            if not bool(unfinished.any()):
                break
        else:
            if pending is not None:
                step, flag, event = pending
                if event is not None:
                    event.synchronize()
                if not bool(flag):  # every row had ended at that step: what came after it is padding
                    del tokens[step + 1 :], raw[step + 1 :]
                    break
            pending = _flag_in_flight(unfinished)
            pending = (t, *pending)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((N, 1))], dim=-1)
        logits = decode_step(next_tokens[:, None], attention_mask, positions[:, :, t : t + 1], cache)
    return torch.stack(tokens, dim=1), raw


def _decoding_step(model: Any, types: dict[str, torch.Tensor], cache_kw: str) -> Any:
    """``step(ids, attention_mask, position_ids, cache) -> (N, V)`` float32 logits of one decoding step.

    The language model and the output head are called directly (``model.model.language_model``, then the
    output embeddings on the last hidden state): the multimodal wrappers around them only pass a text
    step through, and on a small model their Python is ~10 % of a decoding forward.  The whole model's
    forward where that layout is missing or under FSDP (whose root module's hooks must run).
    """
    from syngrpo.models.modules import unwrap_model
    from syngrpo.models.scoring import _cache_argument

    base = unwrap_model(model)
    text = getattr(getattr(base, "model", None), "language_model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if text is None or head is None or _fsdp_managed(model):

        def whole(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_kw: cache}, **types
            )
            return out.logits[:, -1].to(dtype=torch.float32)

        return whole
    text_cache_kw = _cache_argument(text)

    def direct(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        out = text(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{text_cache_kw: cache})
        return head(out.last_hidden_state[:, -1]).to(dtype=torch.float32)

    return direct
