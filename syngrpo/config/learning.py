"""The sections that say what is learned and how: ``model``, ``data``, ``rollout``, ``algorithm``, ``rewards``.

The policy and its reference, the task and its splits, the G responses sampled per prompt, the
advantage and policy loss, and the reward terms of eq. 7: together the RL problem of a run.  One
module of the schema (:mod:`syngrpo.config.schema` assembles :class:`~syngrpo.config.schema.TrainConfig`
from the sections; ``syngrpo.config`` re-exports every name), split by area so each reads next to the
sections it is used with; every key is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syngrpo.config.io import StrictModel

#: ``model.policy`` names of shipped checkpoints (package data). ``tiny-warm-start``: the tiny policy after the
#: quickstart's warm start (4 MB; how it was made: docs/quickstart.md), standing in for a pretrained model
SHIPPED_POLICIES = {"tiny-warm-start": Path(__file__).parents[1] / "weights" / "tiny-warm-start"}
#: ``model.family: auto``: the family that reads the checkpoint's ``model_type``
AUTO = "auto"
#: the family ``policy: tiny`` builds when ``model.family`` is ``auto``
DEFAULT_TINY_FAMILY = "qwen2_5_vl"


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

    def warm_start_format(self) -> Literal["syn", "plain"] | None:
        """The response format the policy was warm-started in, when its folder records one.

        A warm start (``syngrpo.train.warm_start``) writes ``response_format`` into its ``sft_stats.json``; the
        shipped ``tiny-warm-start`` carries it too. A hub id, ``tiny`` or a folder without the file records
        nothing (``None``): ``rollout.response_format: auto`` then falls back to the synthesis mode.
        """
        if self.policy == "tiny":
            return None
        stats = Path(SHIPPED_POLICIES.get(self.policy, Path(self.policy).expanduser())) / "sft_stats.json"
        try:
            stamp = stats.stat().st_mtime_ns
        except OSError:  # a hub id, or a folder without a warm start's stats
            return None
        return _recorded_format(str(stats), stamp)


@functools.lru_cache(maxsize=64)
def _recorded_format(stats: str, mtime_ns: int) -> Literal["syn", "plain"] | None:
    """``response_format`` of a warm start's ``sft_stats.json``, read once per version of the file (the config
    is asked every step)."""
    try:
        fmt = json.loads(Path(stats).read_text(encoding="utf-8")).get("response_format")
    except (OSError, ValueError, AttributeError):
        return None
    return fmt if fmt in ("syn", "plain") else None


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
    #: a registered dataset format (``syngrpo data formats``) that reads ``train`` / ``eval`` in place: ``refer``,
    #: ``coco``, ``d3``, ``3dfront``, ``vlmr1_rec`` ... (docs/data.md); ``null`` = the task's own JSON/JSONL, or a
    #: Hugging Face dataset
    format: str | None = None
    #: options of the format's reader, e.g. ``{dataset: refcoco, split_by: unc}``; its ``split`` defaults to
    #: ``train`` for ``train`` and ``val`` for ``eval``
    format_options: dict[str, Any] = Field(default_factory=dict)
    #: the evaluation source's format and options where they differ from ``format`` / ``format_options``
    #: (``eval_format_options`` is laid over ``format_options``); ``none``: the task's own JSON/JSONL
    eval_format: str | None = None
    eval_format_options: dict[str, Any] = Field(default_factory=dict)
    #: randomly keep this many training samples (the paper keeps 2,000); ``null`` = all
    max_train_samples: int | None = Field(None, ge=1)
    toy: ToyDataConfig = Field(default_factory=ToyDataConfig)
    #: where toy data is written (default: ``<run dir>/data``)
    toy_dir: str | None = None
    #: a dataset record whose image is missing, undecodable or larger than PIL's decompression-bomb limit, whose
    #: box is not finite, outside the image, inverted or empty, or whose text is longer than ``max_text_chars``, or
    #: that the task's reader cannot read (a missing field): ``error`` stops before training, naming file and
    #: record of every one; ``drop`` leaves each out with one line naming it, and a total
    bad_samples: Literal["error", "drop"] = "error"
    #: the longest text a record may hold, per field (the problem / referring expression, each label, a
    #: description): one 260 KB expression grew a run past 6 GiB in 21 s
    max_text_chars: int = Field(4096, ge=1)

    def image_root_of(self, split: str) -> str | None:
        """Where the ``train`` or ``eval`` split's relative image paths start."""
        if split == "eval" and self.eval_image_root is not None:
            return self.eval_image_root
        return self.image_root

    def format_of(self, split: str) -> tuple[str | None, dict[str, Any], str]:
        """``(format, options, split name)`` the ``train`` or ``eval`` source is read with (``None``: no format).

        The split name is the options' ``split``, else ``train`` / ``val``: what a format that holds
        several splits (``refer``, ``coco``) selects.
        """
        if split == "eval":
            if self.eval_format == "none":
                return None, {}, "val"
            name = self.eval_format or self.format
            options = {**self.format_options, **self.eval_format_options} if name == self.format else \
                dict(self.eval_format_options)
        else:
            name, options = self.format, dict(self.format_options)
        options = dict(options)
        return name, options, str(options.pop("split", "train" if split == "train" else "val"))


class ImportanceCorrectionConfig(StrictModel):
    """Rollout importance-sampling correction for the sampler/trainer log-prob gap (TRL's
    ``vllm_importance_sampling_correction``; :mod:`syngrpo.algo.rollout_correction`).

    Needs the engine's log-probs of the sampled tokens (``engine_options: {return_logprobs: true}``).
    """

    #: ``off``; ``token_truncate`` / ``sequence_truncate``: the token's (sequence's) ratio clipped to
    #: [clip_min, clip_max]; ``token_mask`` / ``sequence_mask``: weight 0 outside the bounds (TRL's default)
    mode: Literal["off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = "off"
    #: lower bound of the ratio (``null``: none)
    clip_min: float | None = Field(None, ge=0.0)
    #: upper bound of the ratio (TRL's default 3; ``null``: none)
    clip_max: float | None = Field(3.0, gt=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> ImportanceCorrectionConfig:
        if self.clip_min is None and self.clip_max is None:
            raise ValueError("needs clip_max, clip_min or both (the correction bounds the ratio)")
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError(f"clip_min ({self.clip_min}) must not exceed clip_max ({self.clip_max})")
        return self

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class RolloutConfig(StrictModel):
    """Sampling G responses per prompt."""

    engine: str = "hf"
    #: G, the group size of GRPO (paper: 6)
    num_generations: int = 6
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    #: ``syn`` asks for <think><score><description><answer>; ``plain`` for <think><answer>; ``auto`` = the format
    #: the policy was warm-started in when its folder records it (``sft_stats.json``: the shipped warm start, a
    #: run's ``sft/``), so switching synthesis off keeps the answers a warm start writes; else ``syn`` when
    #: synthesis is on, ``plain`` when it is off (a hub model, the paper's prompts)
    response_format: Literal["auto", "syn", "plain"] = "auto"
    #: passed to the engine factory
    engine_options: dict[str, Any] = Field(default_factory=dict)
    #: reweight the loss by trainer / sampler probabilities (needs the engine's log-probs)
    importance_correction: ImportanceCorrectionConfig = Field(default_factory=ImportanceCorrectionConfig)

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


class DynamicSamplingConfig(StrictModel):
    """DAPO's dynamic sampling: groups whose ``metric`` does not vary are dropped and the batch is refilled
    from further prompts (:mod:`syngrpo.algo.dynamic_sampling`, docs/algorithm.md)."""

    enabled: bool = False
    #: what must vary within a group for it to train: ``accuracy`` (R_acc; DAPO's rule, verl's recipe ``acc``)
    #: or ``reward`` (the sum of the reward terms, R_diversity excluded: verl's ``seq_reward``)
    metric: Literal["accuracy", "reward"] = "accuracy"
    #: rollouts per step at most, the first included (verl's ``max_num_gen_batches``, EasyR1's ``max_try_make_batch``)
    max_tries: int = Field(10, ge=1)
    #: the cap reached with the batch short: ``fill`` it with the groups that were dropped (they train as in plain
    #: GRPO: KL term only; logged as ``dynamic/groups_filled``), or stop the run with an ``error`` (verl, EasyR1)
    at_cap: Literal["fill", "error"] = "fill"


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
    #: padding-free scoring: every row's prompt + completion packed into one sequence without padding (verl
    #: ``use_remove_padding``, EasyR1 ``padding_free``); Qwen2-VL-style models; not with the shared prefix yet
    #: (``auto`` then resolves to off, ``true`` is an error)
    packed: bool = False
    #: optimisation passes over each batch of rollouts (mu); with 1 the old policy is the current one
    updates_per_batch: int = Field(1, ge=1)
    #: DAPO's dynamic sampling (drop groups without signal, refill from further prompts); off by default
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)

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
    #: a function written for TRL / VLM-R1 (``def f(completions, solution, **kwargs)``) gets each completion as
    #: ``[{"role": "assistant", "content": text}]``, as TRL passes them for image prompts (``conversation``),
    #: or as the bare text (``text``, TRL's plain-text prompts); ignored by syngrpo-style rewards
    completions: Literal["conversation", "text"] = "conversation"

    @property
    def key(self) -> str:
        """The name its metrics are logged under (``reward/<key>``): a reference logs as its function's name."""
        return self.name.rpartition(":")[2] if ":" in self.name else self.name


class RewardsConfig(StrictModel):
    """r_i = sum of weighted terms (+ R_diversity for ``syn`` responses, by default in synthesis modes): eq. 7."""

    terms: list[RewardTerm] = Field(
        default_factory=lambda: [RewardTerm(name="accuracy"), RewardTerm(name="format")]
    )
    #: weight of R_diversity (eq. 6) on ``syn`` responses; 0 is the paper's "w/o R_diversity" ablation; ``null`` =
    #: 1 with synthesis on (Syn-GRPO), 0 with it off (plain GRPO, Table 1's first row, has no diversity reward)
    diversity_weight: float | None = Field(None, ge=0.0)

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
