"""Typed, validated configuration: one YAML file per run, a section per stage."""

from rlhfkit.config.load import ConfigError, apply_override, load_config, resolve_output_dir, save_resolved
from rlhfkit.config.stages import (
    EvalSection,
    GenerationSection,
    KLSection,
    PPOConfig,
    RewardConfig,
    RewardSourceSection,
    RunConfig,
    SFTConfig,
    TaskSection,
)

__all__ = [
    "ConfigError", "apply_override", "load_config", "resolve_output_dir", "save_resolved",
    "EvalSection", "GenerationSection", "KLSection", "PPOConfig", "RewardConfig",
    "RewardSourceSection", "RunConfig", "SFTConfig", "TaskSection",
]
