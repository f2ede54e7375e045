"""The sections that say how a run is carried out: ``optim``, ``sft``, ``eval``, ``logging``, ``parallel``, ``hardware``.

The optimizer and its schedule, the supervised warm start before RL, evaluation, what the run
directory holds, how the policy is spread over processes, and the machine the config is written
for.  Their own module of the schema because they describe the run rather than the method: the
sections of :mod:`.learning` say what a step computes, these how many steps with which optimizer,
after which warm start, on which processes, and what is kept (:mod:`syngrpo.config.schema` assembles
:class:`~syngrpo.config.schema.TrainConfig`; ``syngrpo.config`` re-exports every name); every key is
documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syngrpo.config.io import StrictModel


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
    #: micro-batches by tokens instead (verl ``use_dynamic_bsz``, EasyR1 ``dynamic_batching``): consecutive prompts
    #: (a prompt's G rows together) while the tokens a micro-batch scores stay within this budget; ``grad_accum``
    #: is then unused.  Tokens counted as scored: real ones with ``algorithm.packed``, else rows x padded length
    token_budget: int | None = Field(None, ge=1)
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
    #: progress of every long phase (warm start, RL steps, evaluation, checkpoints): a bar on a terminal,
    #: plain lines with rate and ETA elsewhere
    progress: bool = True
    #: off a terminal, a progress line at least every this many seconds; ``null`` = ``$SYNGRPO_PROGRESS_INTERVAL``
    #: or 15
    progress_interval_s: float | None = Field(None, gt=0)
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
