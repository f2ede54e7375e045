"""The validated configuration: the schema of ``syngrpo train`` (:mod:`.schema`) and how configs are read,
layered and overridden (:mod:`.io`).

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
from syngrpo.config.schema import (
    AUTO,
    DEFAULT_TINY_FAMILY,
    QUICKSTART_CONFIG,
    SHIPPED_POLICIES,
    AlgorithmConfig,
    DataConfig,
    EvalConfig,
    HardwareConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    NamedPlugin,
    OfflineConfig,
    OptimConfig,
    ParallelConfig,
    RewardsConfig,
    RewardTerm,
    RolloutConfig,
    SFTConfig,
    SynthesisConfig,
    ToyDataConfig,
    TrainConfig,
    VisionPretrainConfig,
    check_runnable,
    default_cache_dir,
    load_train_config,
)

__all__ = [
    "AUTO", "DEFAULT_TINY_FAMILY",
    "QUICKSTART_CONFIG", "SHIPPED_POLICIES", "AlgorithmConfig", "DataConfig", "EvalConfig", "HardwareConfig",
    "LoggingConfig", "LoraConfig", "ModelConfig", "NamedPlugin", "OfflineConfig", "OptimConfig", "ParallelConfig",
    "RewardTerm", "RewardsConfig", "RolloutConfig", "SFTConfig", "StrictModel", "SynthesisConfig", "ToyDataConfig",
    "TrainConfig", "VisionPretrainConfig", "apply_overrides", "check_runnable", "default_cache_dir", "dump_config",
    "load_config", "load_layered", "load_train_config", "load_yaml", "parse_yaml", "validate",
]
