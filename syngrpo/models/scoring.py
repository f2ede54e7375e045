"""Per-token log-probabilities (and entropies) of sampled completions under a policy.

These are the ``log pi_theta(o_{i,t} | q, o_{i,<t})`` of the GRPO objective
(eq. 1): the policy's, the old policy's and the reference model's.  Two facts
from ``REFERENCE.md`` are built in:

* every forward receives ``mm_token_type_ids`` and the image tensors, or
  transformers 5 falls back to 1-D positions and the log-probs drift from the
  sampler's by ~1e-3 (a silent multimodal position bug).  Which per-token inputs
  a completion extends (with zeros: text) is the model family's
  ``token_type_keys``;
* the G completions of one prompt share that prompt, for a VLM mostly image
  tokens.  With ``shared_prefix=True`` the prompt (and the vision tower) runs
  once per group: one prompt forward with ``use_cache``, the cache repeated G
  times, then one forward of the completions on that cache with explicit 3-D
  rotary positions (Prefix Grouper, issue 5 item 3).  Log-probs and gradients
  equal the naive pass's (concatenate prompt and completion, one forward per
  row) to float rounding;
* with ``packed=True`` the rows are packed, padding removed, into one sequence
  (padding-free scoring, verl's ``use_remove_padding``, EasyR1's ``padding_free``):
  transformers 5's Qwen2.5-VL takes (4, 1, L) positions, the first row the
  per-sequence text positions from which it builds a block-diagonal causal mask
  (sdpa and eager too, when ``attention_mask`` is None), the other three each
  row's own 3-D rotary positions.  Equal to the padded pass to float rounding
  (4.8e-7 in float32 on CPU sdpa in a probe; ``tests/models/test_packed_scoring.py``
  asserts 1e-5 relative, gradients included).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from syngrpo.models.modules import unwrap_model
from syngrpo.models.prompts import PromptBatch

#: rows of the (N, T, V) logits turned into log-probs at a time (bounds the float32 copy)
_CHUNK_ROWS = 8


def supports_shared_prefix(model: Any, family: Any = None) -> bool:
    """True when :func:`completion_logprobs` can score with ``shared_prefix=True``.

    Needs a model whose family says the prefix path applies (3-D rotary positions
    from ``get_rope_index``; ``family`` defaults to the installed family of the
    model's ``model_type``) and whose forward returns a KV cache with gradients:
    gradient checkpointing in training mode turns the cache off, so it rules the
    shared prefix out.
    """
    from syngrpo.models.family import family_of

    base = unwrap_model(model)
    family = family if family is not None else family_of(base)
    if family is None or not family.shared_prefix:
        return False
    if not hasattr(getattr(base, "model", None), "get_rope_index"):
        return False
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    if checkpointing and base.training:
        return False
    return True


def supports_packed(model: Any) -> bool:
    """True when :func:`completion_logprobs` can score with ``packed=True``: a model with 3-D rotary
    positions from ``get_rope_index`` (Qwen2-VL / Qwen2.5-VL), whose forward reads packed positions."""
    return hasattr(getattr(unwrap_model(model), "model", None), "get_rope_index")


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, *, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / temperature) at ``token_ids`` and, optionally, the entropy of each distribution.

    ``logits`` (N, T, V), ``token_ids`` (N, T) -> (N, T) float32 each.  Rows are
    upcast to float32 a few at a time so a bfloat16 model with a 150k vocabulary
    does not need a second full float32 copy of its logits.
    """
    logps, ents = [], []
    for start in range(0, logits.shape[0], _CHUNK_ROWS):
        chunk = logits[start : start + _CHUNK_ROWS].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        lse = torch.logsumexp(chunk, dim=-1)  # (n, T)
        ids = token_ids[start : start + _CHUNK_ROWS]
        logps.append(chunk.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse)
        if with_entropy:
            probs = torch.softmax(chunk, dim=-1)
            ents.append(lse - (probs * chunk).sum(-1))
    logp = torch.cat(logps, 0)
    return logp, (torch.cat(ents, 0) if with_entropy else None)


def _expanded(batch: PromptBatch, n_rows: int, group_size: int) -> PromptBatch:
    """The prompts with one row per completion (p0 x G, p1 x G, ...)."""
    if batch.num_rows == n_rows:
        return batch
    if batch.group_size == 1 and batch.num_rows * group_size == n_rows:
        return batch.expand(group_size)
    raise ValueError(
        f"{n_rows} completions do not fit a batch of {batch.num_rows} rows (group_size {batch.group_size}) "
        f"with G = {group_size}"
    )


def _collapsed(batch: PromptBatch, n_rows: int, group_size: int) -> PromptBatch:
    """The prompts with one row per group."""
    if batch.group_size == group_size and batch.num_rows == n_rows:
        return batch.collapse()
    if batch.group_size == 1 and batch.num_rows * group_size == n_rows:
        return batch
    if batch.num_rows == n_rows and n_rows % group_size == 0:  # expanded by hand: rows of a group are equal
        return batch.select(range(0, n_rows, group_size))
    raise ValueError(
        f"{n_rows} completions do not fit a batch of {batch.num_rows} rows (group_size {batch.group_size}) "
        f"with G = {group_size}"
    )


def completion_logprobs(
    model: Any,
    batch: PromptBatch,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    group_size: int,
    shared_prefix: bool = False,
    packed: bool = False,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, T) log-probs of ``completion_ids`` given their prompts, and (N, T) entropies when asked.

    ``batch`` holds the prompts, expanded to N rows or one row per group of
    ``group_size`` consecutive completions.  ``temperature`` divides the logits
    (use the sampling temperature so that the ratio of eq. 1 compares the
    distributions that were sampled).  Positions where ``completion_mask`` is 0
    get 0.  Gradients flow to ``model``'s parameters unless called under
    ``torch.no_grad()``.  ``shared_prefix=True`` (see :func:`supports_shared_prefix`)
    runs each prompt once per group instead of once per completion; ``packed=True``
    (see :func:`supports_packed`) drops the padding of every row, prompt and completion.
    """
    if completion_ids.ndim != 2 or completion_ids.shape != completion_mask.shape:
        raise ValueError("completion_ids and completion_mask must both be (N, T)")
    n_rows, T = completion_ids.shape
    if T == 0:
        empty = completion_ids.new_zeros((n_rows, 0), dtype=torch.float32)
        return empty, (empty.clone() if with_entropy else None)
    completion_ids = completion_ids.to(batch.device)
    completion_mask = completion_mask.to(batch.device)
    if shared_prefix and packed:
        raise ValueError("shared_prefix and packed scoring do not compose yet: pick one")
    if shared_prefix:
        logits = _shared_prefix_logits(model, batch, completion_ids, completion_mask, group_size)
    elif packed:
        logits = _packed_logits(model, batch, completion_ids, completion_mask, group_size)
    else:
        logits = _naive_logits(model, batch, completion_ids, completion_mask, group_size)
    logp, entropy = token_logprobs(logits, completion_ids, temperature=temperature, with_entropy=with_entropy)
    keep = completion_mask.to(logp.dtype)
    return logp * keep, (entropy * keep if entropy is not None else None)


def _naive_logits(model: Any, batch: PromptBatch, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                  group_size: int) -> torch.Tensor:
    """Prompt + completion in one forward per row; (N, T, V) logits predicting each completion token."""
    full = _expanded(batch, completion_ids.shape[0], group_size)
    T = completion_ids.shape[1]
    inputs = full.model_inputs()
    inputs["input_ids"] = torch.cat([full.input_ids, completion_ids], dim=1)  # (N, P + T)
    inputs["attention_mask"] = torch.cat([full.attention_mask, completion_mask.to(full.attention_mask.dtype)], 1)
    for key in _token_type_keys(full):  # text over the completion
        inputs[key] = torch.cat([inputs[key], torch.zeros_like(completion_ids, dtype=inputs[key].dtype)], 1)
    out = model(**inputs, use_cache=False, logits_to_keep=T + 1)
    return out.logits[:, :-1]  # position P-1+t predicts completion token t


def _token_type_keys(batch: PromptBatch) -> tuple[str, ...]:
    """Per-token inputs of the forward that a completion extends with zeros (the family's; default mm types)."""
    family = batch.family
    return tuple(family.token_type_keys) if family is not None else ("mm_token_type_ids",)


def completion_position_ids(model: Any, prompts: PromptBatch, group_size: int, length: int) -> torch.Tensor:
    """(3, B * G, length) rotary positions of the completion tokens that follow each prompt.

    The model's own continuation path derives positions from the full attention
    mask and the cached ``rope_deltas`` (wrong lengths here), so they are built
    explicitly: text after the prompt continues one past the prompt's largest
    3-D position, the same positions ``get_rope_index`` gives prompt + completion.
    """
    base = unwrap_model(model)
    pos, _ = base.model.get_rope_index(
        prompts.input_ids,
        mm_token_type_ids=prompts.mm_token_type_ids,
        image_grid_thw=prompts.image_grid_thw,
        attention_mask=prompts.attention_mask,
    )  # (3, B, P); padding positions hold 0
    start = pos.amax(dim=(0, 2)) + 1  # (B,)
    start = start.repeat_interleave(group_size)  # (B * G,)
    steps = torch.arange(length, device=start.device)
    return (start[:, None] + steps[None, :]).unsqueeze(0).expand(3, -1, -1)


def _cache_argument(model: Any) -> str:
    """The name the model's forward takes its KV cache under: ``cache`` from transformers 5.2x on (where
    ``past_key_values`` warns a FutureWarning on every call, breaking the progress bar), else ``past_key_values``."""
    try:
        params = inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The KV cache of a forward's output under either name (reading ``past_key_values`` where it was renamed
    ``cache`` logs a deprecation warning)."""
    if "cache" in out.keys():
        return out["cache"]
    return getattr(out, "past_key_values", None)


def _shared_prefix_logits(model: Any, batch: PromptBatch, completion_ids: torch.Tensor,
                          completion_mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """One prompt forward per group, its KV cache repeated G times; (N, T, V) logits."""
    prompts = _collapsed(batch, completion_ids.shape[0], group_size)
    G = completion_ids.shape[0] // prompts.num_rows
    prompt_out = model(**prompts.model_inputs(), use_cache=True, logits_to_keep=1)
    first = prompt_out.logits[:, -1:].repeat_interleave(G, dim=0)  # (N, 1, V) predicts completion token 0
    cache = _returned_cache(prompt_out)
    if cache is None:
        raise RuntimeError("the prompt forward returned no KV cache; shared-prefix scoring needs use_cache "
                           "(turn gradient checkpointing off or use shared_prefix=False)")
    if G > 1:
        cache.batch_repeat_interleave(G)  # differentiable: gradients of all G rows reach the prompt
    T = completion_ids.shape[1]
    attention_mask = torch.cat(
        [prompts.attention_mask.repeat_interleave(G, dim=0), completion_mask.to(prompts.attention_mask.dtype)], 1
    )  # (N, P + T)
    types = {key: torch.zeros_like(completion_ids, dtype=getattr(prompts, key).dtype)
             for key in _token_type_keys(prompts)}
    out = model(
        input_ids=completion_ids,
        attention_mask=attention_mask,
        position_ids=completion_position_ids(model, prompts, G, T),
        **{_cache_argument(model): cache},
        use_cache=True,
        **types,
    )
    return torch.cat([first, out.logits[:, :-1]], dim=1)


def _packed_logits(model: Any, batch: PromptBatch, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """Every row's prompt + completion without padding, one after the other in one forward; (N, T, V) logits.

    Positions: each row's own 3-D rotary positions (``get_rope_index`` on the padded rows, then the
    real tokens' columns), under a first row of text positions that restart at 0 for each row, which
    is how transformers tells the packed sequences apart (its block-diagonal causal mask).  Images stay
    in row order, so ``pixel_values`` go in as they are.  Logits of padding positions are 0.
    """
    full = _expanded(batch, completion_ids.shape[0], group_size)
    n_rows, T = completion_ids.shape
    inputs = full.model_inputs()
    ids = torch.cat([full.input_ids, completion_ids], dim=1)  # (N, P + T)
    mask = torch.cat([full.attention_mask, completion_mask.to(full.attention_mask.dtype)], 1).bool()
    types = {key: torch.cat([inputs[key], torch.zeros_like(completion_ids, dtype=inputs[key].dtype)], 1)
             for key in _token_type_keys(full)}
    pos, _ = unwrap_model(model).model.get_rope_index(
        ids, mm_token_type_ids=types.get("mm_token_type_ids"), image_grid_thw=full.image_grid_thw,
        attention_mask=mask.long())  # (3, N, P + T)
    lengths = mask.sum(1)  # (N,)
    flat = mask.reshape(-1)
    text_pos = torch.cumsum(mask, 1) - 1  # 0, 1, ... over each row's real tokens (its padding is dropped)
    position_ids = torch.cat([text_pos.reshape(1, -1)[:, flat], pos.reshape(3, -1)[:, flat]], 0)[:, None]  # (4, 1, L)
    extra = {key: value.reshape(1, -1)[:, flat] for key, value in types.items()}
    for key in ("pixel_values", "image_grid_thw"):
        if key in inputs:
            extra[key] = inputs[key]
    out = model(input_ids=ids.reshape(1, -1)[:, flat], position_ids=position_ids, attention_mask=None,
                use_cache=False, **extra)
    logits = out.logits[0]  # (L, V)
    # completion token t of row r is predicted by the position before it: its row's start + prompt length - 1 + t
    n_completion = completion_mask.sum(1)
    ends = torch.cumsum(lengths, 0)
    first = ends - n_completion - 1  # (N,) the prompt's last token
    steps = torch.arange(T, device=ids.device)
    index = (first[:, None] + steps[None, :]).clamp(max=logits.shape[0] - 1)  # (N, T)
    picked = logits[index.reshape(-1)].reshape(n_rows, T, -1)
    return picked * (steps[None, :] < n_completion[:, None]).to(picked.dtype)[..., None]
