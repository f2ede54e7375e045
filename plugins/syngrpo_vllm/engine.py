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
"""

from __future__ import annotations

import os
from typing import Any

import torch

from syngrpo.models.policy import PolicyBundle, PromptBatch, unwrap_model
from syngrpo.rollout import Rollout, completion_mask_from_ids, completion_mask_truncated

GREEDY_TEMPERATURE = 1e-5


class VLLMRolloutEngine:
    """Sample with ``vllm.LLM.generate``; the LLM is created on first use from the policy's checkpoint.

    Options: ``model`` (path or hub id; default the bundle's), ``gpu_memory_utilization``
    (0.3: the trainer shares the GPU), ``max_model_len``, ``dtype``, ``enforce_eager``,
    ``enable_prefix_caching`` (True: the G samples share their prompt), ``tensor_parallel_size``,
    ``seed``, ``return_logprobs``; any other keyword goes to ``vllm.LLM``.
    """

    name = "vllm"

    def __init__(self, bundle: PolicyBundle | None = None, *, model: str | None = None,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None, dtype: str = "auto",
                 enforce_eager: bool = False, enable_prefix_caching: bool = True, tensor_parallel_size: int = 1,
                 seed: int = 0, return_logprobs: bool = False, **llm_kwargs: Any) -> None:
        import vllm  # noqa: F401  (the factory checked it is installed; fail here rather than mid-run)

        self.bundle = bundle
        self.model = model
        self.return_logprobs = return_logprobs
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
        outputs = self.llm(bundle).generate(requests, params, use_tqdm=False)

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
        """Load ``model``'s current weights into the vLLM engine (LoRA adapters merged), then drop stale cache."""
        if self._llm is None:
            return  # created later from the checkpoint; nothing sampled with old weights yet
        weights = list(policy_weights(model))

        def load(vllm_model: Any) -> None:
            vllm_model.load_weights(weights)

        if hasattr(self._llm, "apply_model"):
            self._llm.apply_model(load)
        else:  # older in-process engines
            load(self._llm.llm_engine.model_executor.driver_worker.model_runner.model)
        if hasattr(self._llm, "reset_prefix_cache"):
            self._llm.reset_prefix_cache()

    def close(self) -> None:
        self._llm = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def policy_weights(model: Any):
    """``(name, tensor)`` pairs in transformers naming; a peft model's LoRA adapters are merged in."""
    if hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter"):
        model.merge_adapter()
        try:
            base = unwrap_model(model)
            for name, tensor in base.state_dict().items():
                if "lora_" in name:
                    continue
                yield name.replace(".base_layer", ""), tensor.detach().clone()
        finally:
            model.unmerge_adapter()
        return
    for name, tensor in unwrap_model(model).state_dict().items():
        yield name, tensor.detach()
