"""The training configuration: one validated object, section by section.

Every key is documented in ``docs/configuration.md``.  Defaults are the
paper's settings where the paper gives one (Syn-GRPO §4: AdamW, lr 1e-6, batch
size 20, G = 6 rollouts, 5 epochs, smoothing weight gamma = 0.7); the rest
follow VLM-R1, the framework the paper builds on (clip 0.2, KL beta 0.04).

The config is validated once, at the edge (``syngrpo train`` / ``syngrpo
eval``), with :func:`load_train_config`; everything after that receives typed
values.

:class:`TrainConfig` below is the table of contents: one field per YAML section.  The sections are
defined by area: what is learned and how (:mod:`.learning`: ``model``, ``data``, ``rollout``,
``algorithm``, ``rewards``), synthesized data (:mod:`.synthesis`: ``synthesis``, ``offline``) and how
the run is carried out (:mod:`.run`: ``optim``, ``sft``, ``eval``, ``logging``, ``parallel``,
``hardware``).  This module re-exports every section, as ``syngrpo.config`` does; the checks across
sections (:func:`check_runnable`) are here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from syngrpo.config.io import StrictModel, load_config
from syngrpo.config.learning import (
    AUTO,
    DEFAULT_TINY_FAMILY,
    SHIPPED_POLICIES,
    AlgorithmConfig,
    DataConfig,
    DynamicSamplingConfig,
    ImportanceCorrectionConfig,
    LoraConfig,
    ModelConfig,
    NamedPlugin,
    RewardsConfig,
    RewardTerm,
    RolloutConfig,
    ToyDataConfig,
    default_cache_dir,
)
from syngrpo.config.run import (
    EvalConfig,
    HardwareConfig,
    LoggingConfig,
    OptimConfig,
    ParallelConfig,
    SFTConfig,
    VisionPretrainConfig,
)
from syngrpo.config.synthesis import OfflineConfig, SynthesisConfig
from syngrpo.errors import ConfigError

# the sections live in .learning, .synthesis and .run; every name stays importable from here
__all__ = [
    "AUTO", "DEFAULT_TINY_FAMILY", "QUICKSTART_CONFIG", "SHIPPED_POLICIES", "AlgorithmConfig", "DataConfig", "DynamicSamplingConfig",
    "ImportanceCorrectionConfig",
    "EvalConfig", "HardwareConfig", "LoggingConfig", "LoraConfig", "ModelConfig", "NamedPlugin", "OfflineConfig",
    "OptimConfig", "ParallelConfig", "RewardTerm", "RewardsConfig", "RolloutConfig", "SFTConfig", "SynthesisConfig",
    "ToyDataConfig", "TrainConfig", "VisionPretrainConfig", "check_runnable", "default_cache_dir",
    "load_train_config",
]

#: the shipped quickstart config (package data), used by ``syngrpo train`` with no ``-c``
QUICKSTART_CONFIG = Path(__file__).parents[1] / "configs" / "quickstart.yaml"


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
        """The response format the prompt asks for (see ``rollout.response_format``).

        ``auto`` follows the policy's warm start where it records its format, so ``synthesis.mode: off`` on a
        warm start that answers in ``syn`` stays a run whose answers parse (plain GRPO with the format held
        equal, issue #23); otherwise ``syn`` with synthesis on, ``plain`` with it off.
        """
        fmt = self.rollout.response_format
        if fmt == "auto":
            return self.model.warm_start_format() or ("syn" if self.synthesis.enabled else "plain")
        return fmt

    @property
    def diversity_weight(self) -> float:
        """The weight of R_diversity this run uses: ``rewards.diversity_weight``, or for ``null`` 1 with synthesis
        on and 0 with it off (so the synthesis switch alone turns Syn-GRPO into plain GRPO)."""
        w = self.rewards.diversity_weight
        if w is None:
            return 1.0 if self.synthesis.enabled else 0.0
        return w


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
        why = ("the policy was warm-started in the plain format (its sft_stats.json) and " if
               cfg.rollout.response_format == "auto" else "")
        raise ConfigError(
            f"invalid config:\n  rollout.response_format: {why}'plain' responses have no <description> to "
            f"synthesize from, but synthesis.mode is {s.mode!r}; use response_format: syn (a policy warm-started "
            "in syn), or synthesis.mode: off"
        )


def load_train_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then ``--set key=value`` overrides; validated once."""
    cfg = load_config(TrainConfig, path, overrides)
    check_runnable(cfg)
    return cfg
