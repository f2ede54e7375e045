"""A stand-in for the ``vllm`` package (CUDA only, not installable here) that records what it receives.

Tests put it into ``sys.modules["vllm"]`` (:func:`install`) and then drive the real
``VLLMRolloutEngine`` against it.  It is a test double at a boundary these machines cannot
cross, so it does two jobs:

* **It refuses what real vLLM refuses.**  Every name and signature it accepts was read in vLLM's
  own sources, versions 0.32.0, 0.33.0 and 0.34.0 (the ``vllm`` extra's window; the wheels'
  ``vllm/entrypoints/llm.py``, ``vllm/engine/arg_utils.py``, ``vllm/sampling_params.py``,
  ``vllm/v1/engine/{llm_engine,core}.py``, ``vllm/v1/worker/gpu_worker.py``), and is cited where it
  is defined below.  ``LLM(...)`` rejects a keyword that is neither a parameter of
  ``LLM.__init__`` nor an ``EngineArgs`` field (vLLM raises ``TypeError`` from
  ``EngineArgs(**kwargs)``); ``SamplingParams`` rejects unknown fields and greedy sampling with
  ``n > 1``; ``sleep`` / ``wake_up`` take only vLLM's levels and tags, and sleeping needs
  ``enable_sleep_mode=True``; ``generate`` refuses to run while any memory is asleep, after a
  level-2 sleep before weights were reloaded, with more images or videos than
  ``limit_mm_per_prompt`` allows, or with a number of image placeholders in the prompt other than the
  number of images (``BaseMultiModalProcessor._validate_mm_placeholders``).
* **It models the state a weight sync must invalidate**: a prefix cache and a multimodal encoder
  cache keyed by prompt and image, each entry stamped with the weights' version.  A request
  served from an entry computed with older weights lands in ``LLM.stale`` (what real vLLM would
  silently do).

``generate`` samples random token ids from ``vocab_size``, honouring ``logit_bias`` (-100 or less
removes a token) and ``stop_token_ids``; log-probs come from ``LLM.logprob_fn`` when a test sets
it, called with the temperature vLLM would have applied (the sampling temperature under
``logprobs_mode="processed_logprobs"``, 1.0 under the default ``raw_logprobs``).  Every call lands
in ``LLM.calls`` in order; ``load_weights`` batches land in ``LLM.loaded``.  Tests whose behaviour
rests on it say so in their names (``..._with_standin_vllm``).
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: the vLLM releases whose sources the names below were read from
VLLM_VERSIONS = ("0.32.0", "0.33.0", "0.34.0")

# ---- names read in vLLM's sources --------------------------------------------------------------------
# Generated with Python's ast module from the three wheels (pip download --no-deps vllm==X): the
# keyword parameters of ``LLM.__init__`` (vllm/entrypoints/llm.py) and the annotated fields of the
# ``EngineArgs`` dataclass (vllm/engine/arg_utils.py) that every one of 0.32.0, 0.33.0 and 0.34.0 has.
# 0.33 adds monokernel, sleep_mode_backend, watchdog_config; 0.34 also enable_extensible_kv_cache and
# a few scheduler knobs: not accepted here, so the engine never depends on them.

#: ``LLM.__init__``'s own keyword parameters besides ``model`` (vllm/entrypoints/llm.py, 0.32-0.34)
LLM_INIT_PARAMS = frozenset({
    'allowed_local_media_path', 'allowed_media_domains', 'attention_config', 'chat_template', 'compilation_config',
    'convert', 'cpu_offload_gb', 'disable_custom_all_reduce', 'dtype', 'enable_return_routed_experts',
    'enforce_eager', 'gpu_memory_utilization', 'hf_overrides', 'hf_token', 'kv_cache_memory_bytes',
    'logits_processors', 'mm_processor_kwargs', 'offload_group_size', 'offload_num_in_group', 'offload_params',
    'offload_prefetch_step', 'pooler_config', 'profiler_config', 'quantization', 'quantization_config',
    'return_sampling_mask', 'revision', 'runner', 'seed', 'skip_tokenizer_init', 'spec_method', 'spec_model',
    'spec_tokens', 'structured_outputs_config', 'tensor_parallel_size', 'tokenizer', 'tokenizer_mode',
    'tokenizer_revision', 'trust_remote_code'
})

#: ``EngineArgs`` fields, where ``LLM(**kwargs)`` sends every other keyword (vllm/engine/arg_utils.py, 0.32-0.34)
ENGINE_ARGS_FIELDS = frozenset({
    '_api_process_count', '_api_process_rank', 'additional_config', 'aggregate_engine_logging', 'all2all_backend',
    'allow_deprecated_quantization', 'async_scheduling', 'attention_backend', 'aux_output_config', 'block_size',
    'code_revision', 'collect_detailed_traces', 'config_format', 'cp_kv_cache_interleave_size',
    'cpu_distributed_timeout_seconds', 'cpu_offload_params', 'cudagraph_capture_sizes', 'cudagraph_metrics',
    'custom_histogram_buckets', 'data_parallel_address', 'data_parallel_backend', 'data_parallel_external_lb',
    'data_parallel_hybrid_lb', 'data_parallel_multi_port_external_lb', 'data_parallel_rank',
    'data_parallel_rpc_port', 'data_parallel_size', 'data_parallel_size_local', 'data_parallel_start_rank',
    'dbo_decode_token_threshold', 'dbo_prefill_token_threshold', 'dcp_comm_backend', 'dcp_kv_cache_interleave_size',
    'dcp_q_replicate', 'decode_context_parallel_size', 'default_mm_loras', 'device_ids', 'diffusion_config',
    'disable_cascade_attn', 'disable_chunked_mm_input', 'disable_hybrid_kv_cache_manager', 'disable_log_stats',
    'disable_nccl_for_dp_synchronization', 'disable_sliding_window', 'distributed_executor_backend',
    'distributed_timeout_seconds', 'download_dir', 'dp_sync_interval', 'ec_manager_config', 'ec_transfer_config',
    'elastic_ep_max_dp_size', 'enable_batch_sharded_sampling', 'enable_chunked_prefill', 'enable_cumem_allocator',
    'enable_dbo', 'enable_elastic_ep', 'enable_ep_weight_filter', 'enable_eplb', 'enable_expert_parallel',
    'enable_fault_tolerance', 'enable_flashinfer_autotune', 'enable_hc_sp', 'enable_layerwise_nvtx_tracing',
    'enable_logging_iteration_details', 'enable_lora', 'enable_mamba_cache_stochastic_rounding',
    'enable_mamba_shared_prefix_checkpoint', 'enable_mfu_metrics', 'enable_mixed_moe_lora_format',
    'enable_mm_embeds', 'enable_mm_processor_stats', 'enable_moe_shared_loras', 'enable_nccl_comm_suspend',
    'enable_prefix_caching', 'enable_prompt_embeds', 'enable_shm_tensor_arena', 'enable_sleep_mode',
    'enable_tower_connector_lora', 'enable_trace_replay', 'engram_config', 'eplb_config',
    'expert_placement_strategy', 'fail_on_environ_validation', 'fault_tolerance_config', 'fully_sharded_loras',
    'gdn_prefill_backend', 'generation_config', 'hf_config_path', 'ignore_patterns', 'interleave_mm_strings',
    'io_processor_plugin', 'ir_op_priority', 'jit_monitor_mode', 'jit_monitor_verbose', 'kda_decode_backend',
    'kda_prefill_backend', 'kernel_config', 'kv_cache_dtype', 'kv_cache_dtype_skip_layers', 'kv_cache_metrics',
    'kv_cache_metrics_sample', 'kv_events_config', 'kv_offloading_backend', 'kv_offloading_size',
    'kv_sharing_fast_prefill', 'kv_transfer_config', 'language_model_only', 'limit_mm_per_prompt', 'linear_backend',
    'load_format', 'log_config_file', 'log_level', 'logging_config', 'logprobs_mode',
    'long_prefill_token_threshold', 'long_prefill_token_threshold_adaptive', 'lora_dtype', 'lora_target_modules',
    'mamba_backend', 'mamba_block_size', 'mamba_cache_dtype', 'mamba_cache_mode', 'mamba_cache_philox_rounds',
    'mamba_config', 'mamba_ssm_cache_dtype', 'mamba_ssu_algorithm', 'master_addr', 'master_port', 'max_cpu_loras',
    'max_cudagraph_capture_size', 'max_logprobs', 'max_lora_cls_labels', 'max_lora_rank', 'max_loras',
    'max_model_len', 'max_num_active_seqs', 'max_num_batched_tokens', 'max_num_queued_reqs',
    'max_num_queued_tokens', 'max_num_scheduled_tokens', 'max_num_seqs', 'max_parallel_loading_workers',
    'media_io_kwargs', 'mm_device_do_normalize', 'mm_encoder_attn_backend', 'mm_encoder_attn_dtype',
    'mm_encoder_fp8_scale_path', 'mm_encoder_fp8_scale_save_margin', 'mm_encoder_fp8_scale_save_path',
    'mm_encoder_only', 'mm_encoder_tp_mode', 'mm_hasher_algorithm', 'mm_ipc_gpu_memory_gb', 'mm_processor_cache_gb',
    'mm_processor_cache_type', 'mm_processor_device', 'mm_shm_cache_max_object_size_mb', 'mm_tensor_ipc',
    'model_class_overrides', 'model_impl', 'model_loader_extra_config', 'model_weights', 'moe_backend', 'nnodes',
    'node_rank', 'num_gpu_blocks_override', 'numa_bind', 'numa_bind_cpus', 'numa_bind_nodes', 'offload_backend',
    'optimization_level', 'otlp_traces_endpoint', 'override_generation_config', 'per_request_spec_decode_metrics',
    'performance_mode', 'pipeline_parallel_size', 'prefill_context_parallel_size', 'prefill_schedule_interval',
    'prefix_cache_retention_interval', 'prefix_caching_hash_algo', 'prefix_match_unit', 'pt_load_map_location',
    'ray_workers_use_nsight', 'reasoning_config', 'reasoning_parser', 'reasoning_parser_plugin',
    'renderer_num_workers', 'replayssm_buffer_len', 'safetensors_load_strategy', 'safetensors_prefetch_block_size',
    'safetensors_prefetch_num_threads', 'scheduler_cls', 'scheduler_reserve_full_isl', 'scheduling_policy',
    'served_model_name', 'show_hidden_metrics_for_version', 'shutdown_timeout', 'skip_mm_profiling',
    'sleep_mode_offload_cudagraph', 'sleep_preserve_parameter_names', 'sparse_indexer_topk_backend',
    'specialize_active_lora', 'speculative_config', 'stream_interval', 'swa_bounded_replay', 'tokens_only',
    'ubatch_size', 'use_fp64_gumbel', 'use_replayssm', 'use_tqdm_on_load', 'video_pruning_method',
    'video_pruning_rate', 'watermark', 'watermark_config', 'weight_transfer_config', 'worker_cls',
    'worker_extension_cls'
})

#: ``SamplingParams``' public fields (vllm/sampling_params.py, msgspec.Struct, identical in 0.32-0.34)
SAMPLING_PARAMS_FIELDS = frozenset({
    'allowed_token_ids', 'bad_words', 'detokenize', 'extra_args', 'flat_logprobs', 'frequency_penalty',
    'ignore_eos', 'include_stop_str_in_output', 'logit_bias', 'logprob_token_ids', 'logprobs', 'max_tokens',
    'min_p', 'min_tokens', 'n', 'output_kind', 'output_text_buffer_length', 'presence_penalty',
    'prompt_logprob_start', 'prompt_logprob_token_ids', 'prompt_logprobs', 'repetition_detection',
    'repetition_penalty', 'routed_experts_prompt_start', 'seed', 'skip_clone', 'skip_reading_prefix_cache',
    'skip_special_tokens', 'spaces_between_special_tokens', 'stop', 'stop_token_ids', 'stream_interval',
    'structured_outputs', 'temperature', 'thinking_token_budget', 'top_k', 'top_p', 'trace_decode_token_ids',
    'watermarking'
})

#: ``ModelConfig.logprobs_mode`` values (``LogprobsMode`` in vllm/config/model.py, 0.32-0.34); "processed" is after
#: logit bias, penalties, temperature and top-k/top-p, "raw" before any of them
LOGPROBS_MODES = ("raw_logits", "raw_logprobs", "processed_logits", "processed_logprobs")
#: ``LLM.sleep(level=)``: 0 pauses scheduling, 1 offloads weights to CPU and drops the KV cache, 2 discards the
#: weights and the KV cache (``LLM.sleep`` docstring and ``EngineCore.sleep``, 0.32-0.34)
SLEEP_LEVELS = (0, 1, 2)
#: ``LLM.wake_up(tags=)`` values (``LLM.wake_up`` docstring, 0.32-0.34); scheduling resumes once all are awake
WAKE_UP_TAGS = ("weights", "kv_cache", "scheduling")
#: ``vllm.sampling_params._SAMPLING_EPS``: temperatures below it are greedy (``SamplingParams.__post_init__``)
SAMPLING_EPS = 1e-5


class SamplingParams:
    """Keeps its keyword arguments as attributes; refuses what ``vllm.SamplingParams`` refuses.

    Unknown fields: ``msgspec.Struct`` raises ``TypeError``.  Greedy with ``n > 1``:
    ``SamplingParams._verify_greedy_sampling`` raises ``VLLMValidationError`` (a ``ValueError``):
    "n must be 1 when using greedy sampling".
    """

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - SAMPLING_PARAMS_FIELDS)
        if unknown:
            raise TypeError(f"Unexpected keyword argument(s) {unknown} for vllm.SamplingParams")
        self.kwargs = kwargs
        self.n, self.temperature, self.top_p, self.seed, self.logprobs = 1, 1.0, 1.0, None, None
        for k, v in kwargs.items():
            setattr(self, k, v)
        if self.temperature < SAMPLING_EPS and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def __repr__(self) -> str:
        return f"SamplingParams({self.kwargs})"


@dataclass
class Logprob:
    """``vllm.logprobs.Logprob``: the log-probability of one token."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str
    logprobs: Any = None


@dataclass
class RequestOutput:
    outputs: list[Completion] = field(default_factory=list)


class _Model:
    """What ``apply_model`` hands to the function: records ``load_weights`` batches."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def load_weights(self, weights):
        batch = [(name, tensor.detach().clone()) for name, tensor in weights]
        self.llm.loaded.append(batch)
        self.llm.weights_version += 1
        self.llm.discarded = False  # (a simplification: real vLLM needs every parameter rewritten)
        self.llm._note("load_weights", [n for n, _ in batch])
        if self.llm.on_load is not None:
            self.llm.on_load(batch)


class _LLMEngine:
    """``LLM.llm_engine`` (``vllm.v1.engine.llm_engine.LLMEngine``): only what the engine reaches through it."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def reset_encoder_cache(self) -> None:
        """``LLMEngine.reset_encoder_cache()`` (0.32-0.34): drops cached vision-encoder outputs; ``LLM`` has no
        method of its own for it (its ``reset_mm_cache`` clears the processor's input cache only)."""
        self.llm._note("reset_encoder_cache")
        self.llm.encoder_cache.clear()


class LLM:
    instances: list[LLM] = []
    #: token ids generate draws from (tests set it to the tokenizer's size)
    vocab_size: int = 64
    #: ``fn(request, token_ids, temperature) -> list[float]``: the log-probs generate reports when asked for them
    logprob_fn: Callable[[dict[str, Any], list[int], float], list[float]] | None = None

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - LLM_INIT_PARAMS - ENGINE_ARGS_FIELDS)
        if unknown:  # EngineArgs(**kwargs) raises TypeError for a keyword it has no field for
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword argument(s) {unknown}")
        mode = kwargs.get("logprobs_mode", "raw_logprobs")
        if mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode {mode!r} is not one of {LOGPROBS_MODES}")
        limits = kwargs.get("limit_mm_per_prompt", {})
        if not isinstance(limits, dict) or not all(isinstance(v, int) and v >= 0 for v in limits.values()):
            raise ValueError(f"limit_mm_per_prompt must map a modality to a count, got {limits!r}")
        self.model = model
        self.kwargs = kwargs
        self.llm_engine = _LLMEngine(self)
        self.calls: list[tuple[str, Any]] = [("init", kwargs)]
        #: the requests of every ``generate`` call, in order
        self.requests: list[list[dict[str, Any]]] = []
        self.loaded: list[list[tuple[str, Any]]] = []
        self.on_load = None
        self.on_call = None
        #: increases with every load_weights batch; cache entries remember the version they were computed with
        self.weights_version = 0
        self.prefix_cache: dict[str, int] = {}
        self.encoder_cache: dict[str, int] = {}
        #: (cache, key) of every lookup answered by an entry computed with older weights
        self.stale: list[tuple[str, str]] = []
        self.asleep: set[str] = set()  # tags still asleep
        self.discarded = False  # weights discarded by a level-2 sleep and not reloaded yet
        LLM.instances.append(self)

    def _note(self, name: str, detail: Any = None) -> None:
        self.calls.append((name, detail))
        if self.on_call is not None:
            self.on_call(name, detail)

    # ---- sampling -------------------------------------------------------------------------------------
    def generate(self, prompts, sampling_params: SamplingParams | None = None, *, use_tqdm: bool = True,
                 lora_request=None, priority=None, tokenization_kwargs=None, mm_processor_kwargs=None):
        """``LLM.generate``'s signature (vllm/entrypoints/llm.py, identical in 0.32-0.34)."""
        import torch

        params = sampling_params or SamplingParams()
        self._note("generate", params)
        if self.asleep:  # real vLLM keeps scheduling paused until every tag is awake: generate would hang
            raise RuntimeError(f"generate() while asleep ({sorted(self.asleep)} not woken up)")
        if self.discarded:
            raise RuntimeError("generate() after a level-2 sleep before the weights were reloaded")
        requests = prompts if isinstance(prompts, (list, tuple)) else [prompts]
        self.requests.append(list(requests))
        limits = self.kwargs.get("limit_mm_per_prompt", {})
        vocab = self.vocab_size
        bias = getattr(params, "logit_bias", None) or {}
        allowed = [t for t in range(vocab) if bias.get(t, 0.0) > -100.0]
        stops = list(getattr(params, "stop_token_ids", None) or [])
        gen = torch.Generator().manual_seed(int(getattr(params, "seed", None) or 0))
        processed = self.kwargs.get("logprobs_mode", "raw_logprobs").startswith("processed")
        out = []
        for request in requests:
            mm = request.get("multi_modal_data") or {}
            for modality, items in mm.items():
                count = len(items) if isinstance(items, (list, tuple)) else 1
                if modality in limits and count > limits[modality]:
                    raise ValueError(f"At most {limits[modality]} {modality}(s) may be provided in one prompt")
            images = mm.get("image")
            _check_placeholders(request.get("prompt", ""), images)
            image_keys = [_image_key(im) for im in (images if isinstance(images, (list, tuple)) else [images])
                          if im is not None]
            for key in image_keys:
                self._lookup("encoder", self.encoder_cache, key)
            if self.kwargs.get("enable_prefix_caching", True):
                self._lookup("prefix", self.prefix_cache, request.get("prompt", "") + "|" + "|".join(image_keys))
            completions = []
            for _ in range(int(params.n)):
                n = int(torch.randint(1, int(params.max_tokens) + 1, (1,), generator=gen))
                ids = [allowed[int(i)] for i in torch.randint(0, len(allowed), (n,), generator=gen)]
                finish = "length"
                for j, t in enumerate(ids):
                    if t in stops:
                        ids, finish = ids[: j + 1], "stop"
                        break
                logprobs = None
                if params.logprobs is not None:
                    temperature = float(params.temperature) if processed else 1.0
                    values = (LLM.logprob_fn(request, ids, temperature) if LLM.logprob_fn is not None
                              else [0.0] * len(ids))
                    logprobs = [{t: Logprob(float(v))} for t, v in zip(ids, values, strict=True)]
                completions.append(Completion(token_ids=ids, finish_reason=finish, logprobs=logprobs))
            out.append(RequestOutput(completions))
        return out

    def _lookup(self, cache_name: str, cache: dict[str, int], key: str) -> None:
        if key in cache:
            if cache[key] != self.weights_version:
                self.stale.append((cache_name, key))
        else:
            cache[key] = self.weights_version

    # ---- weights and memory ----------------------------------------------------------------------------
    def apply_model(self, func):
        """``LLM.apply_model(func) -> list`` (one result per worker; 0.32-0.34)."""
        if "weights" in self.asleep:
            raise RuntimeError("apply_model() while the weights are asleep (their GPU memory is unmapped)")
        return [func(_Model(self))]

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        """``LLM.sleep(level=1, mode="abort")`` (0.34 adds ``reset_connector``); needs ``enable_sleep_mode=True``.

        Level >= 1 also clears the prefix cache (``EngineCore.sleep``: ``clear_cache = level >= 1``).
        """
        self._note("sleep", level)
        if not self.kwargs.get("enable_sleep_mode", False):
            raise RuntimeError("Sleep mode is not enabled: create the LLM with enable_sleep_mode=True")
        if level not in SLEEP_LEVELS:
            raise ValueError(f"sleep level must be one of {SLEEP_LEVELS}, got {level!r}")
        if level >= 1:
            self.asleep = {"weights", "kv_cache"}
            self.prefix_cache.clear()
        else:
            self.asleep = {"scheduling"}
        if level == 2:
            self.discarded = True

    def wake_up(self, tags: list[str] | None = None) -> bool:
        """``LLM.wake_up(tags=None) -> bool`` (0.32-0.34): ``True`` once everything is awake."""
        self._note("wake_up", tags)
        if tags is not None:
            bad = [t for t in tags if t not in WAKE_UP_TAGS]
            if bad:
                raise ValueError(f"wake_up tags must be in {WAKE_UP_TAGS}, got {bad}")
        self.asleep = set() if tags is None else self.asleep - set(tags)
        if self.asleep == {"scheduling"}:
            self.asleep = set()  # EngineCore.wake_up resumes scheduling once all executor memory is back
        return not self.asleep

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        """``LLM.reset_prefix_cache(reset_running_requests=False, reset_connector=False) -> bool`` (0.32-0.34)."""
        self._note("reset_prefix_cache")
        self.prefix_cache.clear()
        return True

    def reset_mm_cache(self) -> None:
        """``LLM.reset_mm_cache()`` (0.32-0.34): the multimodal *processor* cache (preprocessed inputs, which do not
        depend on the weights); the encoder outputs are ``llm_engine.reset_encoder_cache()``'s."""
        self._note("reset_mm_cache")


#: the one-per-image placeholder each family's chat template writes (vLLM expands each into the image's tokens)
IMAGE_PLACEHOLDERS = ("<|vision_start|><|image_pad|><|vision_end|>", "<|begin_of_image|><|image|><|end_of_image|>",
                      "<IMG_CONTEXT>")


def _check_placeholders(prompt: str, images: Any) -> None:
    """vLLM's ``BaseMultiModalProcessor._validate_mm_placeholders`` (vllm/multimodal/processing/processor.py):
    a prompt needs one placeholder per image item, or it raises ``RuntimeError("Expected there to be N prompt
    updates corresponding to N image items, but instead found M prompt updates! ...")``."""
    if images is None:
        return
    count = len(images) if isinstance(images, (list, tuple)) else 1
    found = max(prompt.count(p) for p in IMAGE_PLACEHOLDERS)
    if found and found != count:
        raise RuntimeError(f"Expected there to be {count} prompt updates corresponding to {count} image items, "
                           f"but instead found {found} prompt updates!")


def _image_key(image: Any) -> str:
    """What vLLM hashes a multimodal item by: its content."""
    data = image.tobytes() if hasattr(image, "tobytes") else repr(image).encode()
    return hashlib.sha1(data + repr(getattr(image, "size", "")).encode()).hexdigest()[:16]


def install(monkeypatch=None) -> types.ModuleType:
    """Put the stand-in into ``sys.modules['vllm']`` (undone by ``monkeypatch`` when given)."""
    mod = types.ModuleType("vllm")
    mod.LLM = LLM
    mod.SamplingParams = SamplingParams
    mod.__standin__ = True
    mod.__version__ = VLLM_VERSIONS[-1]
    LLM.instances = []
    LLM.logprob_fn = None
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, "vllm", mod)
    else:
        sys.modules["vllm"] = mod
    return mod
