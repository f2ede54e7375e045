"""The ``vllm`` rollout engine: sampling with vLLM, weights synced from the policy after each update.

vLLM (CUDA only, the ``vllm`` extra) runs colocated with the trainer, in the
same process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so new weights are handed
over as tensors: :meth:`VLLMRolloutEngine.sync_weights` passes the policy's
``(name, tensor)`` pairs to the vLLM model's ``load_weights`` (vLLM maps
transformers names to its own), then resets the prefix cache, whose entries
were computed with the old weights.

Prompts go in as ``{"prompt": text, "multi_modal_data": {"image": PIL}}``
with the chat template already applied (one ``<|image_pad|>`` per image; vLLM
expands it), so vLLM's processor resizes the image exactly as
:func:`syngrpo.models.policy.encode_prompts` did and the prompt's frames stay
valid.  The returned :class:`~syngrpo.rollout.Rollout` carries the expanded
prompt batch for scoring with transformers.

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
does the same with ``suppress_tokens``.

``enable_sleep_mode=True`` frees vLLM's memory during the update: after sampling the engine
sleeps (``llm.sleep(level=1)``: weights offloaded to CPU, KV cache dropped), and before new
weights are loaded it wakes the weights (``wake_up(tags=["weights"])``), loads them, then
wakes the KV cache (the staged wake-up of vLLM's sleep-mode docs, so the KV cache is not
allocated while weights are written).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from syngrpo.models.policy import PolicyBundle, PromptBatch, unwrap_model
from syngrpo.rollout import Rollout, completion_mask_from_ids, completion_mask_truncated

GREEDY_TEMPERATURE = 1e-5
#: logit bias of the tokens that must never be sampled (the OpenAI range's floor; e^-100 underflows to 0)
SUPPRESS_BIAS = -100.0


def world_size() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group torchrun started, or (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover - a broken distributed build is a single process here
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class VLLMRolloutEngine:
    """Sample with ``vllm.LLM.generate``; the LLM is created on first use from the policy's checkpoint.

    Options: ``model`` (path or hub id; default the bundle's), ``gpu_memory_utilization``
    (0.3: the trainer shares the GPU), ``max_model_len``, ``dtype``, ``enforce_eager``,
    ``enable_prefix_caching`` (True: the G samples share their prompt), ``tensor_parallel_size``,
    ``seed``, ``return_logprobs``, ``enable_sleep_mode`` (sleep during the update, see the module
    doc); any other keyword goes to ``vllm.LLM``.
    """

    name = "vllm"
    #: vLLM samples from its own weights (synced module by module in :meth:`sync_weights`): the trainer must
    #: not gather the FSDP shards around a rollout for it
    samples_from_policy = False

    def __init__(self, bundle: PolicyBundle | None = None, *, model: str | None = None,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None, dtype: str = "auto",
                 enforce_eager: bool = False, enable_prefix_caching: bool = True, tensor_parallel_size: int = 1,
                 seed: int = 0, return_logprobs: bool = False, enable_sleep_mode: bool = False,
                 **llm_kwargs: Any) -> None:
        import vllm  # noqa: F401  (the factory checked it is installed; fail here rather than mid-run)

        from syngrpo.errors import ConfigError

        self.bundle = bundle
        self.model = model
        self.return_logprobs = return_logprobs
        self.sleep_mode = bool(enable_sleep_mode)
        self.asleep = False
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
        self.llm_kwargs = dict(
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            limit_mm_per_prompt={"image": 1},
            **llm_kwargs,
        )
        if max_model_len is not None:
            self.llm_kwargs["max_model_len"] = max_model_len
        self._llm: Any = None

    # ---- engine ------------------------------------------------------------------------------------
    def llm(self, bundle: PolicyBundle) -> Any:
        """The ``vllm.LLM`` (created on first call, in this process so weights can be handed over)."""
        if self._llm is None:
            from vllm import LLM

            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            kwargs = dict(self.llm_kwargs)
            if bundle.max_pixels is not None or bundle.min_pixels is not None:
                mm = {k: v for k, v in (("max_pixels", bundle.max_pixels), ("min_pixels", bundle.min_pixels))
                      if v is not None}
                kwargs.setdefault("mm_processor_kwargs", mm)
            self._llm = LLM(model=self.model or bundle.name_or_path, **kwargs)
        return self._llm

    def sampling_params(self, bundle: PolicyBundle, *, num_generations: int, temperature: float, top_p: float,
                        max_new_tokens: int, seed: int | None):
        from vllm import SamplingParams

        greedy = temperature <= GREEDY_TEMPERATURE
        return SamplingParams(
            n=int(num_generations),
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
        G = int(num_generations)
        params = self.sampling_params(bundle, num_generations=G, temperature=temperature, top_p=top_p,
                                      max_new_tokens=max_new_tokens, seed=generator_seed)
        family = bundle.family or prompts.family  # the family knows its request shape
        requests = [family.vllm_request(text, image) if family is not None
                    else {"prompt": text, "multi_modal_data": {"image": image}}
                    for text, image in zip(prompts.prompts, prompts.images, strict=True)]
        llm = self.llm(bundle)
        self.wake()
        outputs = llm.generate(requests, params, use_tqdm=False)
        if self.sleep_mode:  # the update comes next: give vLLM's weights and KV cache back to the trainer
            llm.sleep(level=1)
            self.asleep = True

        rows: list[list[int]] = []
        row_logprobs: list[list[float]] = []
        for request in outputs:  # in prompt order; each holds n completions
            for completion in request.outputs:
                ids = list(completion.token_ids)
                if completion.finish_reason == "stop" and (not ids or ids[-1] not in bundle.eos_token_ids):
                    ids.append(bundle.eos_token_ids[0])  # the policy must learn to stop: score the EOS too
                rows.append(ids)
                if self.return_logprobs and completion.logprobs is not None:
                    row_logprobs.append([step[tok].logprob for step, tok in zip(completion.logprobs, ids, strict=False)])
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
        """Load ``model``'s current weights into the vLLM engine one module at a time, then drop stale cache.

        LoRA adapters are merged first. FSDP2 ``DTensor`` parameters are gathered with
        ``.full_tensor()`` per module (every rank takes part, in the same order), so at most one
        module's full weights exist besides the shards.
        """
        if self._llm is None:
            return  # created later from the checkpoint; nothing sampled with old weights yet
        if self.asleep:
            self._wake_up(["weights"])  # weights back on the GPU, the KV cache still released

        def load(batch: list[tuple[str, Any]]) -> None:
            def apply(vllm_model: Any) -> None:
                vllm_model.load_weights(batch)

            if hasattr(self._llm, "apply_model"):
                self._llm.apply_model(apply)
            else:  # older in-process engines
                apply(self._llm.llm_engine.model_executor.driver_worker.model_runner.model)

        for batch in module_weights(model):
            load(batch)
            del batch
        if self.asleep:
            self._wake_up(["kv_cache"])
            self.asleep = False
        if hasattr(self._llm, "reset_prefix_cache"):
            self._llm.reset_prefix_cache()

    def wake(self) -> None:
        """Wake a sleeping engine fully (sampling without a sync in between, e.g. evaluation)."""
        if self.asleep and self._llm is not None:
            self._wake_up(None)
            self.asleep = False

    def _wake_up(self, tags: list[str] | None) -> None:
        if tags is None:
            self._llm.wake_up()
            return
        try:
            self._llm.wake_up(tags=tags)
        except TypeError:  # vLLM without staged wake-up: everything at once, the first time asked
            if tags == ["weights"]:
                self._llm.wake_up()

    def close(self) -> None:
        self._llm = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def module_weights(model: Any):
    """``(name, tensor)`` batches in transformers naming, one module's parameters and buffers per batch.

    The order and names are the ``state_dict``'s (tied weights appear under each name). FSDP2
    ``DTensor`` shards are gathered with ``.full_tensor()`` only when their module's batch is
    produced; a peft model's LoRA adapters are merged in (names without ``base_layer``).
    """
    if hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter"):
        model.merge_adapter()
        try:
            yield from _module_batches(unwrap_model(model), skip_lora=True)
        finally:
            model.unmerge_adapter()
        return
    yield from _module_batches(unwrap_model(model), skip_lora=False)


def _module_batches(root: Any, *, skip_lora: bool):
    for prefix, module in root.named_modules():
        batch = []
        for name, tensor in module.named_parameters(recurse=False, remove_duplicate=False):
            batch.append((_clean(f"{prefix}.{name}" if prefix else name), _full(tensor)))
        for name, buf in module.named_buffers(recurse=False, remove_duplicate=False):
            if name in getattr(module, "_non_persistent_buffers_set", ()) or buf is None:
                continue
            batch.append((_clean(f"{prefix}.{name}" if prefix else name), _full(buf)))
        if skip_lora:
            batch = [(n.replace(".base_layer", ""), t) for n, t in batch if "lora_" not in n]
        if batch:
            yield batch


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
