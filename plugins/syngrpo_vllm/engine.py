"""The ``vllm`` rollout engine: sampling with vLLM, weights synced from the policy before the first rollout and
after each update.

vLLM (CUDA only, the ``vllm`` extra, 0.32-0.34) runs colocated with the trainer, in the
same process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so new weights are handed
over as tensors: :meth:`VLLMRolloutEngine.sync_weights` passes the policy's
``(name, tensor)`` pairs to the vLLM model's ``load_weights`` (vLLM maps
transformers names to its own), then resets the prefix cache *and* the
multimodal encoder cache (``llm.llm_engine.reset_encoder_cache()``): both hold
what the old weights computed, and a repeated image would otherwise get the old
vision tower's features.

**The first rollout samples the policy as it is, not the checkpoint on disk.**  vLLM loads its
weights from ``bundle.name_or_path``, which after an SFT warm start, on a resumed run's ranks
other than 0, or for a LoRA policy is not what is being trained.  The trainer therefore calls
:meth:`sync_weights` at the end of ``setup`` on every rank (a collective under FSDP), which
creates the LLM and loads the current weights; :meth:`generate` also syncs once by itself when
nothing was synced yet (a caller outside the trainer).

Prompts go in as ``{"prompt": text, "multi_modal_data": {"image": PIL}}``
with the chat template already applied (one image placeholder; vLLM expands it),
and vLLM's processor is told the *same* pixel budget the trainer's processor uses
(``mm_processor_kwargs={"size": {"shortest_edge", "longest_edge"}}``, from
:func:`syngrpo.models.policy.pixel_budget`): ``size`` is the one key every family's
image processor reads (GLM-4.1V's ignores ``max_pixels``), so the image is sampled at
the resolution it is scored at and the prompt's frames stay valid.  The returned
:class:`~syngrpo.models.rollout.Rollout` carries the expanded prompt batch for scoring with
transformers.

**Sequence budget.**  Without ``max_model_len`` vLLM reserves the model's whole context (128k
tokens for Qwen2.5-VL: ~6.8 GiB of KV cache at 7B, more than a 0.3 share leaves after the
weights).  Unless the option is given, the engine sets it to the run's budget: the image tokens
at the processor's ``longest_edge`` (an upper bound: the processor never makes more) + a text
allowance (``prompt_text_tokens``, 256 by default, the allowance ``syngrpo plan`` uses) + the
longest completion the run asks for (the trainer passes ``max(rollout, eval) max_new_tokens``
through :meth:`set_max_new_tokens`).  A prompt over the allowance is refused before vLLM sees
it, with the option to raise.  ``limit_mm_per_prompt`` defaults to one image and no video.

**Several images per prompt.**  A prompt that shows several images goes in as
``{"multi_modal_data": {"image": [PIL, PIL, ...]}}``, the images in the order of the prompt's
placeholders (vLLM's multi-image input: ``MultiModalDataDict`` maps a modality to one item or a
list, ``vllm/multimodal/inputs.py``; vLLM refuses a prompt with more items than
``limit_mm_per_prompt`` allows and budgets memory for that many).  The trainer tells the engine
the most images a sample of the run shows (:meth:`VLLMRolloutEngine.set_max_images`, from the
data), which raises the image limit to it and counts that many images in ``max_model_len``; a
batch with more is refused before vLLM sees it.

Under ``torchrun`` (world size above one) every rank creates its own engine on its own GPU with
vLLM's ``distributed_executor_backend="external_launcher"``: vLLM then joins the process group
torchrun set up instead of spawning workers, and each rank samples its own share of the prompts
(one engine per rank, ``tensor_parallel_size`` 1; the engine seed is offset by the rank).

Weights are synced one module at a time: when the policy's parameters are FSDP2 ``DTensor``
shards, each module's parameters are gathered with ``.full_tensor()``, handed to vLLM, and
dropped before the next module is gathered, so no second full copy of the policy is ever held.

The bundle's ``suppress_token_ids`` (the image placeholder and the other vision special
tokens) get a logit bias of -100 in every request's ``SamplingParams``, so they are never
sampled (a sampled ``<|image_pad|>`` breaks the next forward with pixels); the ``hf`` engine
does the same with ``suppress_tokens``.  Greedy decoding (temperature 0) with G > 1 asks vLLM for
one completion per prompt and repeats it G times, as the ``hf`` engine does (vLLM refuses
``n > 1`` with temperature 0).

``return_logprobs`` asks vLLM for ``logprobs_mode="processed_logprobs"``: the log-probs after
temperature (and logit bias, top-k/top-p), i.e. on the distribution the trainer scores at the
sampling temperature; vLLM's default ``raw_logprobs`` are at temperature 1, so the trainer's
``logprob/engine_max_abs_diff`` would measure the temperature, not the engines.

``enable_sleep_mode=True`` frees vLLM's memory during the update: after sampling the engine
sleeps (``llm.sleep(level=sleep_level)``; level 1: weights offloaded to host memory, KV cache
dropped; level 2: weights discarded, no host copy), and before new weights are loaded it empties
PyTorch's CUDA cache (memory the update freed but the allocator still holds; TRL and EasyR1 do
the same) and wakes the weights (``wake_up(tags=["weights"])``), loads them all, then wakes the
KV cache (the staged wake-up of vLLM's sleep-mode docs, so the KV cache is not allocated while
weights are written).  After a level-2 sleep the weights' memory holds nothing, so every
parameter must be rewritten before sampling: the sync always sends all of them, and sampling
again without a sync first re-syncs from the bundle's policy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from syngrpo.errors import ConfigError
from syngrpo.models.modules import unwrap_model
from syngrpo.models.policy import PolicyBundle, PromptBatch, pixel_budget
from syngrpo.models.rollout import Rollout, completion_mask_from_ids, completion_mask_truncated
from syngrpo.scale.plan import DEFAULT_PROMPT_TOKENS, tokens_for_pixels
from syngrpo_vllm.memory import DEFAULT_UTILIZATION, vllm_max_model_len

log = logging.getLogger(__name__)

GREEDY_TEMPERATURE = 1e-5
#: logit bias of the tokens that must never be sampled (the OpenAI range's floor; e^-100 underflows to 0)
SUPPRESS_BIAS = -100.0
#: one image per prompt and no video unless ``limit_mm_per_prompt`` asks (vLLM would budget memory for videos)
DEFAULT_MM_LIMITS = {"image": 1, "video": 0}
SLEEP_LEVELS = (1, 2)


def world_size() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group torchrun started, or (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover - a broken distributed build is a single process here
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def image_token_budget(bundle: PolicyBundle) -> int:
    """The most image tokens one prompt can hold: the processor's ``longest_edge`` pixels in merged patches."""
    family = bundle.family
    counted = family.max_image_tokens(bundle) if family is not None else None
    if counted is not None:
        return int(counted)
    return tokens_for_pixels(pixel_budget(bundle)["longest_edge"], bundle.patch_size, bundle.merge_size)


class VLLMRolloutEngine:
    """Sample with ``vllm.LLM.generate``; the LLM is created on first use and given the policy's current weights.

    Options: ``model`` (path or hub id vLLM reads the architecture and first weights from; default
    the bundle's), ``gpu_memory_utilization`` (0.3: the trainer shares the GPU), ``max_model_len``
    (default: the run's budget, see the module doc), ``prompt_text_tokens`` (the text part of that
    budget, 256), ``limit_mm_per_prompt`` (merged over ``{"image": 1, "video": 0}``), ``dtype``,
    ``enforce_eager``, ``enable_prefix_caching`` (True: the G samples share their prompt),
    ``tensor_parallel_size``, ``seed``, ``return_logprobs`` (asks vLLM for processed log-probs),
    ``enable_sleep_mode`` and ``sleep_level`` (1 or 2; sleep during the update, see the module doc);
    any other keyword goes to ``vllm.LLM`` (``load_format``, ``max_num_seqs``, ...).
    """

    name = "vllm"
    #: vLLM samples from its own weights (synced module by module in :meth:`sync_weights`): the trainer must
    #: not gather the FSDP shards around a rollout for it
    samples_from_policy = False

    def __init__(self, bundle: PolicyBundle | None = None, *, model: str | None = None,
                 gpu_memory_utilization: float = DEFAULT_UTILIZATION, max_model_len: int | None = None,
                 prompt_text_tokens: int | None = None, limit_mm_per_prompt: dict[str, int] | None = None,
                 dtype: str = "auto", enforce_eager: bool = False, enable_prefix_caching: bool = True,
                 tensor_parallel_size: int = 1, seed: int = 0, return_logprobs: bool = False,
                 enable_sleep_mode: bool = False, sleep_level: int = 1, **llm_kwargs: Any) -> None:
        import vllm  # noqa: F401  (the factory checked it is installed; fail here rather than mid-run)

        self.bundle = bundle
        self.model = model
        self.return_logprobs = return_logprobs
        self.sleep_mode = bool(enable_sleep_mode)
        if int(sleep_level) not in SLEEP_LEVELS:
            raise ConfigError(f"rollout.engine_options.sleep_level={sleep_level!r}: use 1 (weights kept in host "
                              "memory) or 2 (weights discarded and reloaded by the sync)")
        self.sleep_level = int(sleep_level)
        self.asleep = False
        self.max_model_len = int(max_model_len) if max_model_len is not None else None
        self.prompt_text_tokens = int(prompt_text_tokens if prompt_text_tokens is not None else DEFAULT_PROMPT_TOKENS)
        #: the longest completion the run asks for (:meth:`set_max_new_tokens`); sizes ``max_model_len``
        self.max_new_tokens: int | None = None
        rank, world = world_size()
        if world > 1:
            if tensor_parallel_size != 1:
                raise ConfigError(
                    f"rollout.engine_options.tensor_parallel_size={tensor_parallel_size} under torchrun: each rank "
                    "runs its own vLLM engine on its own GPU and samples its own prompts; use 1")
            llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
            seed = seed + rank  # each rank draws its own samples
        if self.sleep_mode:
            llm_kwargs["enable_sleep_mode"] = True
        if return_logprobs:  # on the sampling temperature, as the trainer scores (see the module doc)
            llm_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        self.llm_kwargs = dict(
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            limit_mm_per_prompt={**DEFAULT_MM_LIMITS, **dict(limit_mm_per_prompt or {})},
            **llm_kwargs,
        )
        self._llm: Any = None
        self._synced = False

    # ---- engine ------------------------------------------------------------------------------------
    def set_max_new_tokens(self, max_new_tokens: int) -> None:
        """The longest completion the run will ask for (rollouts and evaluation); call before the first use."""
        self.max_new_tokens = int(max_new_tokens)

    @property
    def image_limit(self) -> int:
        """The most images one prompt may show (``limit_mm_per_prompt["image"]``)."""
        return int(self.llm_kwargs["limit_mm_per_prompt"].get("image", 1))

    def set_max_images(self, max_images: int) -> None:
        """The most images a prompt of the run shows (from its data); call before the first use.  Raises the
        image limit to it (never lowers one the options set) and counts that many images in ``max_model_len``."""
        n = int(max_images)
        if n <= self.image_limit:
            return
        if self._llm is not None:
            raise RuntimeError(f"set_max_images({n}) after the vLLM engine was created with an image limit of "
                               f"{self.image_limit}; call it before the first rollout")
        self.llm_kwargs["limit_mm_per_prompt"] = {**self.llm_kwargs["limit_mm_per_prompt"], "image": n}

    def sequence_budget(self, bundle: PolicyBundle, max_new_tokens: int | None = None) -> int | None:
        """``max_model_len``: the option when given, else image tokens (of ``image_limit`` images) + text
        allowance + completion, else None."""
        if self.max_model_len is not None:
            return self.max_model_len
        new = max(self.max_new_tokens or 0, max_new_tokens or 0)
        if not new:
            return None
        return vllm_max_model_len(image_token_budget(bundle) * self.image_limit, self.prompt_text_tokens, new)

    def llm(self, bundle: PolicyBundle, max_new_tokens: int | None = None) -> Any:
        """The ``vllm.LLM`` (created on first call, in this process so weights can be handed over)."""
        if self._llm is None:
            from vllm import LLM

            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            kwargs = dict(self.llm_kwargs)
            # the trainer's pixel budget, whatever the user put beside it: one resolution for sampling and scoring
            own = (bundle.family.image_kwargs(bundle, always=True) if bundle.family is not None
                   else {"size": pixel_budget(bundle)})
            kwargs["mm_processor_kwargs"] = {**dict(kwargs.get("mm_processor_kwargs") or {}), **own}
            budget = self.sequence_budget(bundle, max_new_tokens)
            if budget is not None:
                kwargs["max_model_len"] = budget
            else:
                log.warning("vLLM engine created without a sequence budget: vLLM reserves the model's whole context "
                            "(set rollout.engine_options.max_model_len)")
            self._llm = LLM(model=self.model or bundle.name_or_path, **kwargs)
        return self._llm

    def sampling_params(self, bundle: PolicyBundle, *, num_generations: int, temperature: float, top_p: float,
                        max_new_tokens: int, seed: int | None):
        """vLLM's ``SamplingParams``; greedy asks for one completion (vLLM refuses ``n > 1`` at temperature 0)."""
        from vllm import SamplingParams

        greedy = temperature <= GREEDY_TEMPERATURE
        return SamplingParams(
            n=1 if greedy else int(num_generations),
            temperature=0.0 if greedy else float(temperature),
            top_p=1.0 if greedy else float(top_p),
            max_tokens=int(max_new_tokens),
            stop_token_ids=list(bundle.eos_token_ids),
            seed=seed,
            logprobs=0 if self.return_logprobs else None,
            skip_special_tokens=True,
            # vision special tokens are never sampled (the hf engine's suppress_tokens)
            logit_bias={int(t): SUPPRESS_BIAS for t in bundle.suppress_token_ids} or None,
        )

    def generate(self, bundle: PolicyBundle | None, batch: PromptBatch, *, num_generations: int,
                 temperature: float, top_p: float, max_new_tokens: int,
                 generator_seed: int | None = None) -> Rollout:
        bundle = bundle or self.bundle
        if bundle is None:
            raise ValueError("the vllm rollout engine needs a policy bundle (pass bundle=...)")
        prompts = batch.collapse()
        if not prompts.images or not prompts.prompts:
            raise ValueError("the vllm engine needs PromptBatch.images and .prompts (use encode_prompts)")
        if prompts.max_images > self.image_limit:
            raise ConfigError(
                f"a prompt shows {prompts.max_images} images but the vLLM engine takes {self.image_limit} per prompt; "
                f"set rollout.engine_options.limit_mm_per_prompt: {{image: {prompts.max_images}}} (a training run "
                "sets it from its data)")
        G = int(num_generations)
        params = self.sampling_params(bundle, num_generations=G, temperature=temperature, top_p=top_p,
                                      max_new_tokens=max_new_tokens, seed=generator_seed)
        family = bundle.family or prompts.family  # the family knows its request shape
        rows = [prompts.row_images(r) for r in range(prompts.num_rows)]  # each prompt's images, placeholder order
        requests = [family.vllm_request(text, images if len(images) > 1 else images[0]) if family is not None
                    else {"prompt": text, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}
                    for text, images in zip(prompts.prompts, rows, strict=True)]
        llm = self.llm(bundle, max_new_tokens)
        budget = self.sequence_budget(bundle, max_new_tokens)
        longest = int(prompts.attention_mask.sum(-1).max())  # image placeholders expanded, as vLLM counts them
        if budget is not None and longest + int(max_new_tokens) > budget:
            raise ConfigError(
                f"a prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the vLLM engine's "
                f"max_model_len {budget}; raise rollout.engine_options.prompt_text_tokens "
                f"({self.prompt_text_tokens}) or set rollout.engine_options.max_model_len")
        if not self._synced or (self.asleep and self.sleep_level == 2):
            self.sync_weights(bundle.model)  # the policy's weights, not the checkpoint's (or discarded ones)
        self.wake()
        outputs = llm.generate(requests, params, use_tqdm=False)
        if self.sleep_mode:  # the update comes next: give vLLM's weights and KV cache back to the trainer
            llm.sleep(level=self.sleep_level)
            self.asleep = True

        k = G if params.n == 1 and G > 1 else 1  # greedy: one decode per prompt, repeated G times
        rows: list[list[int]] = []
        row_logprobs: list[list[float]] = []
        for request in outputs:  # in prompt order; each holds n completions
            for completion in request.outputs:
                ids = list(completion.token_ids)
                if completion.finish_reason == "stop" and (not ids or ids[-1] not in bundle.eos_token_ids):
                    ids.append(bundle.eos_token_ids[0])  # the policy must learn to stop: score the EOS too
                lp = None
                if self.return_logprobs and completion.logprobs is not None:
                    lp = [step[tok].logprob for step, tok in zip(completion.logprobs, ids, strict=False)]
                for _ in range(k):
                    rows.append(list(ids))
                    if lp is not None:
                        row_logprobs.append(list(lp))
        T = max((len(r) for r in rows), default=0)
        completion_ids = torch.full((len(rows), T), bundle.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            completion_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask = completion_mask_from_ids(completion_ids, bundle.eos_token_ids)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        mask = mask * (torch.arange(T)[None, :] < lengths[:, None]).long()
        logprobs = None
        if row_logprobs and len(row_logprobs) == len(rows):
            logprobs = torch.zeros(len(rows), T)
            for i, lp in enumerate(row_logprobs):
                logprobs[i, : len(lp)] = torch.tensor(lp)
            logprobs = (logprobs * mask).to(bundle.device)
        completion_ids, mask = completion_ids.to(bundle.device), mask.to(bundle.device)
        return Rollout(
            completion_ids=completion_ids,
            completion_mask=mask,
            texts=bundle.decode(completion_ids, mask),
            prompt_index=torch.arange(prompts.num_rows, device=bundle.device).repeat_interleave(G),
            batch=prompts.to(bundle.device).expand(G),
            group_size=G,
            logprobs=logprobs,
            truncated=completion_mask_truncated(completion_ids, mask, bundle.eos_token_ids),
        )

    # ---- weights -----------------------------------------------------------------------------------
    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s current weights into the vLLM engine one module at a time, then drop stale caches.

        Creates the LLM first when there is none yet (the trainer calls this at the end of ``setup``, so the
        first rollout and the start-of-run evaluation sample the policy being trained). LoRA adapters are
        merged first. FSDP2 ``DTensor`` parameters are gathered with ``.full_tensor()`` per module (every
        rank takes part, in the same order), so at most one module's full weights exist besides the shards.
        Every parameter is sent, which is what a level-2 sleep (weights discarded) requires.
        """
        if self._llm is None:
            if self.bundle is None:
                raise ValueError("the vllm rollout engine needs a policy bundle to create its LLM (pass bundle=...)")
            self.llm(self.bundle)
        if self.asleep:
            self._wake_up(["weights"])  # weights back on the GPU, the KV cache still released

        def load(batch: list[tuple[str, Any]]) -> None:
            def apply(vllm_model: Any) -> None:
                vllm_model.load_weights(batch)

            self._llm.apply_model(apply)

        for batch in module_weights(model):
            load(batch)
            del batch
        if self.asleep:
            self._wake_up(["kv_cache"])
            self.asleep = False
        self._reset_caches()
        self._synced = True

    def _reset_caches(self) -> None:
        """Forget what the old weights computed: the prefix cache's KV blocks and the vision encoder's outputs.

        vLLM 0.32-0.34: ``LLM.reset_prefix_cache()``; the encoder cache is reset through
        ``LLM.llm_engine.reset_encoder_cache()`` (``LLMEngine``; ``LLM`` has no method for it, and its
        ``reset_mm_cache`` clears only the processor's input cache, which the weights do not change).
        """
        self._llm.reset_prefix_cache()
        engine = getattr(self._llm, "llm_engine", None)
        if engine is not None and hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()
        else:  # pragma: no cover - vLLM older than the extra's window
            log.warning("this vLLM has no LLMEngine.reset_encoder_cache: repeated images may reuse stale features")

    def wake(self) -> None:
        """Wake a sleeping engine fully (sampling without a sync in between, e.g. evaluation).

        After a level-2 sleep the weights are gone: :meth:`generate` re-syncs instead of calling this.
        """
        if self.asleep and self._llm is not None:
            self._wake_up(None)
            self.asleep = False

    def _wake_up(self, tags: list[str] | None) -> None:
        # memory the update freed is still held by PyTorch's caching allocator: hand it back first, or vLLM's
        # wake-up can fail for lack of memory that is free in all but name (TRL and EasyR1 do the same)
        torch.cuda.empty_cache()
        self._llm.wake_up(tags=tags)

    def close(self) -> None:
        self._llm = None
        self._synced = False
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def module_weights(model: Any):
    """``(name, tensor)`` batches in transformers naming, one module's parameters and buffers per batch.

    The order and names are the ``state_dict``'s (tied weights appear under each name). FSDP2
    ``DTensor`` shards are gathered with ``.full_tensor()`` only when their module's batch is
    produced; a peft model's LoRA adapters are merged in (names without ``base_layer``): each
    adapted layer's weight is sent as ``W + scaling * B @ A`` computed aside (:func:`_merged_lora`), never
    by peft's ``merge_adapter`` / ``unmerge_adapter`` in place, which would leave the rounding of the
    add and the subtract in the frozen base (a bf16 base drifts with every sync) and cannot run on
    FSDP's shards.
    """
    yield from _module_batches(unwrap_model(model))


def _module_batches(root: Any):
    lora_layers: list[str] = []  # prefixes of LoRA layers sent merged: their submodules are not sent again
    for prefix, module in root.named_modules():
        if any(prefix.startswith(p + ".") for p in lora_layers):
            continue
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            lora_layers.append(prefix)
            yield _merged_lora(prefix, module)
            continue
        batch = []
        for name, tensor in module.named_parameters(recurse=False, remove_duplicate=False):
            batch.append((_clean(f"{prefix}.{name}" if prefix else name), _full(tensor)))
        for name, buf in module.named_buffers(recurse=False, remove_duplicate=False):
            if name in getattr(module, "_non_persistent_buffers_set", ()) or buf is None:
                continue
            batch.append((_clean(f"{prefix}.{name}" if prefix else name), _full(buf)))
        if batch:
            yield batch


def _merged_lora(prefix: str, layer: Any) -> list[tuple[str, Any]]:
    """A peft LoRA ``Linear``'s base parameters under the base layer's names, its active adapters added to the
    weight out of place: ``W + sum_a scaling_a * (B_a @ A_a)`` in float32, rounded once to ``W``'s dtype (what
    peft's ``get_delta_weight`` computes; gathered first under FSDP, a collective)."""
    base = layer.base_layer
    if not isinstance(base, torch.nn.Linear):
        raise NotImplementedError(f"{prefix}: LoRA on a {type(base).__name__} cannot be merged for vLLM; "
                                  "target Linear projections only (model.lora.target_modules)")
    batch = [(_clean(f"{prefix}.{name}"), _full(t)) for name, t in base.named_parameters(recurse=False)]
    adapters = [] if layer.disable_adapters or layer.merged else [a for a in layer.active_adapters if a in layer.lora_A]
    for adapter in adapters:
        if adapter in getattr(layer, "lora_variant", {}) or getattr(layer, "lora_bias", {}).get(adapter):
            raise NotImplementedError(f"{prefix}: adapter {adapter!r} is a LoRA variant (DoRA, lora_bias) "
                                      "that cannot be merged for vLLM here; use plain LoRA")
    for i, (name, tensor) in enumerate(batch):
        if name.endswith(".weight") and adapters:
            merged = tensor.float()
            for adapter in adapters:
                delta = _full(layer.lora_B[adapter].weight).float() @ _full(layer.lora_A[adapter].weight).float()
                merged = merged + (delta.T if layer.fan_in_fan_out else delta) * layer.scaling[adapter]
            batch[i] = (name, merged.to(tensor.dtype))
    return batch


def _full(tensor: Any) -> Any:
    """A DTensor shard gathered to its full tensor (a collective: every rank calls it); others detached."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        DTensor = ()  # noqa: N806
    t = tensor.detach()
    if DTensor and isinstance(t, DTensor):
        return t.full_tensor()
    return t


def _clean(name: str) -> str:
    """Drop the wrapper prefixes torch's checkpoint / FSDP1 wrappers add to parameter names."""
    for part in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name


def policy_weights(model: Any):
    """Every ``(name, tensor)`` pair of :func:`module_weights`, flat (gathers module by module as consumed)."""
    for batch in module_weights(model):
        yield from batch
