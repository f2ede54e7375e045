"""The validated configuration: the schema of ``syngrpo train`` (:mod:`.schema`, which assembles the sections of
:mod:`.learning`, :mod:`.synthesis` and :mod:`.run`) and how configs are read, layered and overridden (:mod:`.io`).

Knows nothing but :mod:`syngrpo.errors`: every other package receives typed values from here.
"""

from syngrpo.config.io import (
    StrictModel,
    apply_overrides,
    dump_config,
    load_config,
    load_layered,
    load_yaml,
    parse_yaml,
    validate,
)
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
from syngrpo.config.schema import QUICKSTART_CONFIG, TrainConfig, check_runnable, load_train_config
from syngrpo.config.synthesis import OfflineConfig, SynthesisConfig

__all__ = [
    "AUTO", "DEFAULT_TINY_FAMILY",
    "QUICKSTART_CONFIG", "SHIPPED_POLICIES", "AlgorithmConfig", "DataConfig", "DynamicSamplingConfig",
    "ImportanceCorrectionConfig", "EvalConfig", "HardwareConfig",
    "LoggingConfig", "LoraConfig", "ModelConfig", "NamedPlugin", "OfflineConfig", "OptimConfig", "ParallelConfig",
    "RewardTerm", "RewardsConfig", "RolloutConfig", "SFTConfig", "StrictModel", "SynthesisConfig", "ToyDataConfig",
    "TrainConfig", "VisionPretrainConfig", "apply_overrides", "check_runnable", "default_cache_dir", "dump_config",
    "load_config", "load_layered", "load_train_config", "load_yaml", "parse_yaml", "validate",
]
