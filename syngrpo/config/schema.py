"""The training configuration: one validated object, section by section.

Every key is documented in ``docs/configuration.md``.  Defaults are the
paper's settings where the paper gives one (Syn-GRPO §4: AdamW, lr 1e-6, batch
size 20, G = 6 rollouts, 5 epochs, smoothing weight gamma = 0.7); the rest
follow VLM-R1, the framework the paper builds on (clip 0.2, KL beta 0.04).

The config is validated once, at the edge (``syngrpo train`` / ``syngrpo
eval``), with :func:`load_train_config`; everything after that receives typed
values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syngrpo.config.io import StrictModel, load_config
from syngrpo.errors import ConfigError

#: the shipped quickstart config (package data), used by ``syngrpo train`` with no ``-c``
QUICKSTART_CONFIG = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
#: ``model.policy`` names of shipped checkpoints (package data). ``tiny-warm-start``: the tiny policy after the
#: quickstart's warm start (4 MB; how it was made: docs/quickstart.md), standing in for a pretrained model
#: ``model.family: auto``: the family that reads the checkpoint's ``model_type``
AUTO = "auto"
#: the family ``policy: tiny`` builds when ``model.family`` is ``auto``
DEFAULT_TINY_FAMILY = "qwen2_5_vl"
SHIPPED_POLICIES = {"tiny-warm-start": Path(__file__).parents[1] / "weights" / "tiny-warm-start"}


def default_cache_dir() -> Path:
    """Where built tiny models live: ``$SYNGRPO_CACHE`` or ``~/.cache/syngrpo``."""
    env = os.environ.get("SYNGRPO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "syngrpo"


class LoraConfig(StrictModel):
    """Low-rank adapters on the language model (needs ``peft``); off by default."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class ModelConfig(StrictModel):
    """The policy being trained and the reference model of the KL term."""

    #: hub id or local directory; ``tiny`` builds a tiny random model of ``family`` into ``tiny_dir`` if absent
    #: a hub id or a directory; ``tiny`` (a tiny random policy, built on first use) or a shipped checkpoint
    #: (:data:`SHIPPED_POLICIES`)
    policy: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    #: a registered model family (``syngrpo plugins``); ``auto`` = the one that reads the checkpoint's
    #: ``model_type`` (for ``policy: tiny``: Qwen2.5-VL)
    family: str = "auto"
    #: where ``policy: tiny`` is built (default: ``<cache>/tiny-policy-seed<tiny_seed>``, or
    #: ``<cache>/tiny-<family>-seed<tiny_seed>`` for another family)
    tiny_dir: str | None = None
    tiny_seed: int = 0
    #: passed to ``build_tiny_policy`` (text_hidden, layers, vision_hidden, vision_depth, vocab_size, max_pixels)
    tiny_options: dict[str, Any] = Field(default_factory=dict)
    #: reference model for KL; ``null`` = the policy as it is when RL starts (after the SFT warm start)
    reference: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: ``auto`` = cuda when available, else cpu
    device: str = "auto"
    freeze_vision: bool = False
    gradient_checkpointing: bool = False
    lora: LoraConfig = Field(default_factory=LoraConfig)
    #: processor pixel budget (Qwen2.5-VL ``min_pixels``/``max_pixels``); ``null`` keeps the processor's
    max_pixels: int | None = Field(None, ge=1)
    min_pixels: int | None = Field(None, ge=1)
    attn_implementation: str | None = None

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelConfig:
        if self.max_pixels is not None and self.min_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self

    def resolved_tiny_dir(self) -> Path:
        """Where ``policy: tiny`` lives; the name changes with the build options, so builds never mix."""
        if self.tiny_dir:
            return Path(self.tiny_dir).expanduser()
        family = self.tiny_family()
        name = f"tiny-policy-seed{self.tiny_seed}" if family in (AUTO, DEFAULT_TINY_FAMILY) else \
            f"tiny-{family}-seed{self.tiny_seed}"
        if self.tiny_options:
            digest = hashlib.sha256(json.dumps(self.tiny_options, sort_keys=True).encode()).hexdigest()[:10]
            name += f"-{digest}"
        return default_cache_dir() / name

    def tiny_family(self) -> str:
        """The family ``policy: tiny`` builds: ``family``, or Qwen2.5-VL for ``auto``."""
        return DEFAULT_TINY_FAMILY if self.family == AUTO else self.family


class ToyDataConfig(StrictModel):
    """Procedural data the task draws itself when no dataset file is given."""

    n_train: int = Field(200, ge=1)
    n_eval: int = Field(50, ge=1)
    image_size: int = Field(112, ge=16)
    seed: int = 0
    #: passed to ``task.make_toy_dataset(**options)``
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(StrictModel):
    """Which task, and its training / evaluation splits."""

    task: str = "rec"
    #: passed to the task factory: ``registry.create("tasks", task, **task_options)``
    task_options: dict[str, Any] = Field(default_factory=dict)
    #: dataset file in the task's own format; ``null`` = toy data (``toy`` section)
    train: str | None = None
    eval: str | None = None
    image_root: str | None = None
    #: where the evaluation file's relative image paths start; ``null`` = ``image_root``. Another root serves an
    #: evaluation set stored apart from the training images, or a training file whose paths are relative to
    #: itself (``syngrpo synth --offline`` writes one; ``image_root: null`` then) next to the usual evaluation file
    eval_image_root: str | None = None
    #: for Hugging Face datasets (parquet/arrow files, dataset directories, ``hf://REPO[@CONFIG][:SPLIT]``):
    #: task field -> dataset column, e.g. ``{image: img, problem: question}`` (unnamed columns keep their names)
    columns: dict[str, str] = Field(default_factory=dict)
    #: randomly keep this many training samples (the paper keeps 2,000); ``null`` = all
    max_train_samples: int | None = Field(None, ge=1)
    toy: ToyDataConfig = Field(default_factory=ToyDataConfig)
    #: where toy data is written (default: ``<run dir>/data``)
    toy_dir: str | None = None
    #: a dataset sample whose image is missing or corrupt, or whose box is outside the image, inverted or
    #: empty: ``error`` stops before training (naming file and line); ``drop`` leaves it out and counts it
    bad_samples: Literal["error", "drop"] = "error"

    def image_root_of(self, split: str) -> str | None:
        """Where the ``train`` or ``eval`` split's relative image paths start."""
        if split == "eval" and self.eval_image_root is not None:
            return self.eval_image_root
        return self.image_root


class RolloutConfig(StrictModel):
    """Sampling G responses per prompt."""

    engine: str = "hf"
    #: G, the group size of GRPO (paper: 6)
    num_generations: int = 6
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    #: ``syn`` asks for <think><score><description><answer>; ``plain`` for <think><answer>;
    #: ``auto`` = ``syn`` when synthesis is on, else ``plain``
    response_format: Literal["auto", "syn", "plain"] = "auto"
    #: passed to the engine factory
    engine_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("num_generations")
    @classmethod
    def _group_of_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError(
                f"must be at least 2 (got {v}): group-normalised advantages and the diversity V(q) "
                "need two or more responses per prompt"
            )
        return v


class NamedPlugin(StrictModel):
    """A registry name plus the options its factory takes."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class AlgorithmConfig(StrictModel):
    """Advantages and the policy loss (eq. 1 of GRPO, with the registry's variants)."""

    #: ``grpo`` (eq. 1), ``dr_grpo``, ``mc_grpo`` ... (``syngrpo plugins`` lists them)
    advantage: NamedPlugin = Field(default_factory=lambda: NamedPlugin(name="grpo"))
    #: ``grpo`` (clipped surrogate + KL), ``entropy_loss``, ``entropy_advantage`` ...
    policy_loss: NamedPlugin = Field(default_factory=lambda: NamedPlugin(name="grpo"))
    #: ratio clip range [1 - eps_low, 1 + eps_high] (DAPO clip-higher: eps_high 0.28)
    eps_low: float = Field(0.2, ge=0.0, lt=1.0)
    eps_high: float = Field(0.2, ge=0.0)
    #: KL weight to the reference model (k3 estimator); 0 loads no reference model
    beta: float = Field(0.04, ge=0.0)
    #: ``sequence_mean`` = mean over each response's tokens, then over responses (GRPO, VLM-R1);
    #: ``token_mean`` = mean over all tokens (DAPO); ``constant`` = sum / (N * max tokens) (Dr. GRPO)
    aggregation: Literal["sequence_mean", "token_mean", "constant"] = "sequence_mean"
    #: score G completions against one forward of their shared prompt (faster); ``auto`` = when the engine allows
    shared_prefix: Literal["auto", "true", "false"] = "auto"
    #: optimisation passes over each batch of rollouts (mu); with 1 the old policy is the current one
    updates_per_batch: int = Field(1, ge=1)

    @field_validator("shared_prefix", mode="before")
    @classmethod
    def _bool_to_word(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return "true" if v else "false"
        return v


class RewardTerm(StrictModel):
    """One reward function and its weight in the sum of eq. 7.

    ``name`` is a registered reward (``accuracy``, ``format``, a plugin's) or a
    function given by reference, ``path/to/file.py:function`` or
    ``package.module:function`` (docs/hooks/rewards.md, "Rewards from a file").
    """

    name: str
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """The name its metrics are logged under (``reward/<key>``): a reference logs as its function's name."""
        return self.name.rpartition(":")[2] if ":" in self.name else self.name


class RewardsConfig(StrictModel):
    """r_i = sum of weighted terms (+ diversity reward in synthesis modes): eq. 7."""

    terms: list[RewardTerm] = Field(
        default_factory=lambda: [RewardTerm(name="accuracy"), RewardTerm(name="format")]
    )
    #: weight of R_diversity (eq. 6); 0 is the paper's "w/o R_diversity" ablation
    diversity_weight: float = Field(1.0, ge=0.0)

    @field_validator("terms")
    @classmethod
    def _at_least_one(cls, v: list[RewardTerm]) -> list[RewardTerm]:
        if not v:
            raise ValueError("needs at least one reward term (e.g. {name: accuracy})")
        names = [t.key for t in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"reward term(s) listed twice (or two functions of the same name): {dup}")
        if "diversity" in names:
            raise ValueError("'diversity' is R_diversity (eq. 6), set by rewards.diversity_weight, not a term")
        return v


class SynthesisConfig(StrictModel):
    """Online data synthesis through the data server (paper §3.3)."""

    #: ``off`` = plain GRPO; ``sync`` waits for each batch's images (Table 5 ablation); ``async`` never waits
    mode: Literal["off", "sync", "async"] = "async"
    #: smoothing weight of the moving average of diversity (the paper's gamma / beta; 0.7 in §4)
    gamma: float = Field(0.7, ge=0.0, le=1.0)
    smoothing: bool = True
    #: eq. 8 picks the description of the best-calibrated response; ``random`` is an ablation
    description_selection: Literal["diversity", "random"] = "diversity"
    #: synthesize from the original image each time, or from the latest synthesized version
    source: Literal["original", "latest"] = "original"
    transport: str = "aiohttp"
    transport_options: dict[str, Any] = Field(default_factory=dict)
    #: data-server URLs (several spread the load)
    servers: list[str] = Field(default_factory=list)
    #: bearer token; ``null`` reads ``$SYNGRPO_SERVER_TOKEN`` when set
    token: str | None = None
    #: start a local ``syngrpo serve`` subprocess on 127.0.0.1 (the quickstart does)
    spawn_server: bool = False
    #: server config file for the spawned server (``null`` = the server's defaults)
    server_config: str | None = None
    #: keys of the spawned server's config to override (synthesizer, segmenter, workers ...)
    server: dict[str, Any] = Field(default_factory=dict)
    #: seconds the spawned server may take to start
    server_startup_timeout: float = Field(120.0, gt=0.0)
    #: options sent with every job to the synthesizer (steps, guidance ...)
    job_options: dict[str, Any] = Field(default_factory=dict)
    #: seconds the sync mode waits for a batch's jobs before going on with the originals
    sync_timeout: float = Field(120.0, gt=0.0)
    #: seconds after which an unanswered job is abandoned (the original stays)
    job_timeout: float = Field(900.0, gt=0.0)
    #: never more than this many jobs in flight (new submissions are skipped, not queued)
    max_in_flight: int = Field(64, ge=1)
    #: delete each finished job on the data server (rows and files) once its image is in the run directory, so
    #: the server's disk holds only the jobs in flight; ``false`` keeps them there until the server's retention
    delete_collected: bool = True
    #: seconds between health probes while the server is marked down
    health_interval: float = Field(5.0, ge=0.0)
    #: when synthesis has been down, or every job that finished failed, for ``max_failed_steps`` steps in a row
    #: (and at least ``failure_grace_s`` seconds): ``stop`` the run with an error or ``warn`` loudly and train on;
    #: a token the server refuses (401/403) does the same at once
    on_failure: Literal["stop", "warn"] = "stop"
    max_failed_steps: int = Field(20, ge=1)
    failure_grace_s: float = Field(60.0, ge=0.0)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` as false
        return "off" if v is False else v

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class OptimConfig(StrictModel):
    """AdamW and its schedule (paper §4: lr 1e-6, batch 20, 5 epochs)."""

    lr: float = Field(1e-6, gt=0.0)
    #: prompts per optimizer step (each rolled out G times)
    batch_size: int = Field(20, ge=1)
    epochs: float = Field(5.0, gt=0.0)
    #: stop after this many steps (overrides ``epochs`` when set)
    max_steps: int | None = Field(None, ge=1)
    #: split each step's batch into this many micro-batches for forward/backward (memory), one optimizer step
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)

    def total_steps(self, n_samples: int) -> int:
        """Optimizer steps of a run over ``n_samples`` training samples: ``max_steps`` when set, else
        ceil(epochs x samples / batch_size) (the trainer's count, and what the Table 1 rows keep equal)."""
        if self.max_steps:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_samples / self.batch_size))

    @model_validator(mode="after")
    def _accum_fits(self) -> OptimConfig:
        if self.grad_accum > self.batch_size:
            raise ValueError(
                f"grad_accum ({self.grad_accum}) cannot exceed batch_size ({self.batch_size}): "
                "each micro-batch needs at least one prompt"
            )
        return self


class VisionPretrainConfig(StrictModel):
    """Dense pre-training of a random vision tower before SFT (:mod:`syngrpo.train.vision_pretrain`).

    A stand-in for the pretrained encoder the paper starts from: without it a tiny random
    policy does not learn to localise (docs/study.md).  It draws its own ``pretrain`` split
    of toy data (``data.toy`` settings, which need ``position_code``); ``steps: 0`` skips it.
    """

    steps: int = Field(0, ge=0)
    n_images: int = Field(1000, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    batch_size: int = Field(32, ge=1)
    #: also teach each object's token the object's label ("red circle"): what is there, not only where
    object_labels: bool = False
    #: background styles of its images (``n_images`` shared among them): more than the train split's plain one
    #: make the tower look past the background, as a pretrained encoder does, e.g. on synthesized images
    styles: list[str] = Field(default_factory=lambda: ["plain"], min_length=1)


class SFTConfig(StrictModel):
    """Supervised warm start on the task's data, so a fresh model writes parsable answers before RL."""

    enabled: bool = False
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    #: loss weight of the tokens inside <answer>...</answer> relative to the rest of the response
    answer_weight: float = Field(1.0, gt=0.0)
    #: with the ``syn`` response format: first this many steps in the ``plain`` format, whose prompt and target
    #: are a third of the length (a cheaper step), then ``steps`` in ``syn``; the localisation carries over
    plain_steps: int = Field(0, ge=0)
    #: toy data only: train on an ``sft`` split of this many images of its own instead of the train split
    #: (a warm start that needs more images than the RL run has epochs for); ``null`` = the train split
    n_images: int | None = Field(None, ge=1)
    #: background styles of that split (``n_images`` shared among them)
    styles: list[str] = Field(default_factory=lambda: ["plain"], min_length=1)
    #: pre-train the vision tower first (off by default; the quickstart turns it on)
    vision_pretrain: VisionPretrainConfig = Field(default_factory=VisionPretrainConfig)


class EvalConfig(StrictModel):
    """Greedy evaluation with the task's metrics."""

    #: dataset file; ``null`` = ``data.eval`` (or the toy evaluation split)
    split: str | None = None
    batch_size: int = Field(16, ge=1)
    #: evaluate every N steps (0 = only at the end)
    every: int = Field(0, ge=0)
    #: evaluate before the first RL step too (after the SFT warm start): the baseline of the run
    at_start: bool = False
    at_end: bool = True
    max_samples: int | None = Field(None, ge=1)
    #: ``null`` = ``rollout.max_new_tokens``
    max_new_tokens: int | None = Field(None, ge=1)


class LoggingConfig(StrictModel):
    """What the run directory holds."""

    #: run directory; ``null`` = ``runs/<UTC time>``
    out_dir: str | None = None
    #: checkpoint every N steps (0 = only at the end)
    save_every: int = Field(0, ge=0)
    #: keep this many step checkpoints (the final one is always kept)
    keep_last: int = Field(2, ge=1)
    #: experiment trackers fed every step's metrics, the config, eval tables, completions and the gallery:
    #: ``tensorboard`` (built in), ``wandb``, ``mlflow`` (extras of the same names) or a tracker plugin's name
    trackers: list[str] = Field(default_factory=lambda: ["tensorboard"])
    #: options per tracker, e.g. ``{wandb: {project: my-project, mode: offline}, mlflow: {tracking_uri: ...}}``
    tracker_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: ``false`` turns TensorBoard off even when ``trackers`` lists it (a shorthand kept for old configs)
    tensorboard: bool = True
    plots: bool = True
    gallery: bool = True
    progress: bool = True
    #: completions written to samples.jsonl every ``samples_every`` steps (0 = never)
    samples_every: int = Field(1, ge=0)
    samples_per_step: int = Field(2, ge=0)
    #: original/synthesized pairs shown per epoch in gallery.html
    gallery_per_epoch: int = Field(12, ge=0)

    @field_validator("trackers")
    @classmethod
    def _no_duplicate_trackers(cls, v: list[str]) -> list[str]:
        dup = sorted({n for n in v if v.count(n) > 1})
        if dup:
            raise ValueError(f"tracker(s) listed twice: {dup}")
        return v

    @property
    def tensorboard_on(self) -> bool:
        return self.tensorboard and "tensorboard" in self.trackers


class ParallelConfig(StrictModel):
    """How the policy is spread over the processes ``torchrun`` starts (docs/training.md, "Memory and scale")."""

    #: ``auto`` = ``ddp`` under torchrun (WORLD_SIZE > 1), else one process; ``fsdp`` = FSDP2 ``fully_shard``
    #: per decoder layer and vision block (parameters, gradients and AdamW state split over the ranks;
    #: works with one process too)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    #: FSDP: free the gathered weights of a layer after its forward (less memory, one more all-gather in backward)
    reshard_after_forward: bool = True
    #: seconds a collective may wait for the other ranks before the run fails (instead of hanging)
    timeout: float = Field(1800.0, gt=0.0)
    #: seconds the other ranks wait while rank 0 works alone (SFT warm start, evaluation, logging, writing
    #: a checkpoint, starting the data server): a barrier of its own, so ``timeout`` need not cover them
    main_wait: float = Field(86400.0, gt=0.0)
    #: checkpoint layout: ``auto`` = ``sharded`` under fsdp when every rank sees rank 0's run directory
    #: (each rank writes its own shards with torch.distributed.checkpoint; resumable on any number of
    #: ranks), else ``full`` (weights and optimizer state gathered on rank 0, written by it)
    checkpoint: Literal["auto", "sharded", "full"] = "auto"


class HardwareConfig(StrictModel):
    """The machine a config is written for: the GPUs that train (the data server's are not counted).

    It describes the target, not the machine a run happens on: ``syngrpo plan`` checks the config against it
    when no ``--gpus`` / ``--gpu-memory`` is given, and the trainer only warns when it starts another number of
    processes. Without it a plan assumes one 80 GiB GPU.
    """

    #: training processes, one per GPU (``torchrun --nproc_per_node`` x nodes); ``optim.batch_size`` must divide
    gpus: int = Field(ge=1)
    #: memory of one of them in GiB (the shipped configs: 80, for "80 GB" A100 / H100 cards)
    gpu_memory_gib: float = Field(gt=0.0)

    def mismatch(self, processes: int) -> str | None:
        """A warning when a run starts ``processes`` processes on a config written for another GPU count."""
        if processes == self.gpus:
            return None
        started = f"{processes} process" + ("es" if processes != 1 else "")
        return (f"the config is written for {self.gpus} GPUs of {self.gpu_memory_gib:g} GiB (hardware.gpus) and this "
                f"run has {started}: whether it fits here is `syngrpo plan -c CONFIG --gpus {processes} "
                "--gpu-memory GIB` (launch with torchrun --nproc_per_node=N for several GPUs)")


class OfflineConfig(StrictModel):
    """``syngrpo synth --offline``: the "GRPO + Offline Generation" baseline's data (Table 1).

    Descriptions are written before training by a describer plugin, the images synthesized through
    the data server named in ``synthesis`` (its ``transport``/``servers``, whatever ``synthesis.mode``
    says), and originals + synthesized samples written as one dataset file for plain GRPO.
    """

    #: describer plugin (``register_describers``): ``openai``, ``template``, ``policy``, ...
    describer: str = "template"
    describer_options: dict[str, Any] = Field(default_factory=dict)
    #: synthesized images per original (``--variants`` overrides it)
    variants: int = Field(1, ge=1)
    #: the originals' dataset file; ``null``: ``data.train``
    data: str | None = None
    #: where the originals' relative image paths start; ``null``: ``data.image_root``
    image_root: str | None = None
    #: originals drawn at random (seed ``seed``); ``null``: ``data.max_train_samples``
    max_samples: int | None = Field(None, ge=1)
    #: how long to wait for all images once every job is submitted
    timeout_s: float = Field(3600.0, gt=0.0)


class TrainConfig(StrictModel):
    """Everything one ``syngrpo train`` run needs."""

    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    #: extra plugin modules for this run: importable module names or paths to ``.py`` files, registered like
    #: installed plugins (a reward, a task ... without a package); the data server has its own ``plugins:``
    plugins: list[str] = Field(default_factory=list)
    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    #: the GPUs the config is written for (``syngrpo plan``'s default); ``null`` = not documented
    hardware: HardwareConfig | None = None

    @property
    def response_mode(self) -> Literal["syn", "plain"]:
        """The response format the prompt asks for (see ``rollout.response_format``)."""
        fmt = self.rollout.response_format
        if fmt == "auto":
            return "syn" if self.synthesis.enabled else "plain"
        return fmt


def check_runnable(cfg: TrainConfig) -> None:
    """Cross-section checks a run needs (the defaults alone are a valid object, not a runnable run).

    Whether synthesis has a data server to send to depends on the transport plugin (an in-process one
    needs none): pre-flight checks it (:func:`syngrpo.train.preflight.check_config`), with the registry.
    """
    s = cfg.synthesis
    if cfg.sft.enabled and cfg.sft.vision_pretrain.steps and cfg.data.train:
        raise ConfigError(
            "invalid config:\n  sft.vision_pretrain: pre-training the vision tower draws toy images of its own; "
            "with data.train set use steps: 0"
        )
    if cfg.sft.enabled and cfg.sft.n_images and cfg.data.train:
        raise ConfigError("invalid config:\n  sft.n_images: an SFT split of its own is drawn from toy data only; "
                          "with data.train set the warm start trains on it (sft.n_images: null)")
    if s.enabled and cfg.response_mode == "plain":
        raise ConfigError(
            "invalid config:\n  rollout.response_format: 'plain' responses have no <description> to synthesize "
            f"from, but synthesis.mode is {s.mode!r}; use response_format: syn (or auto), or synthesis.mode: off"
        )


def load_train_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then ``--set key=value`` overrides; validated once."""
    cfg = load_config(TrainConfig, path, overrides)
    check_runnable(cfg)
    return cfg
