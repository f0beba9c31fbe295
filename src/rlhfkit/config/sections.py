"""Config sections shared by the stages: model, optimisation, data, logging.

Every field is written once, as `Field(default, description=...)`; `--help`, the docs and
the validation errors all come from here. Defaults follow the seed's recommended
hyper-parameters. `extra="forbid"` everywhere: a misspelt key is an error, not a silent no-op.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: unknown keys are refused, assignments re-validated, and types
    are strict: `epochs: true` or `batch_size: "8"` is an error, not a silent 1 or 8 (an int is
    still accepted where a float is expected, and YAML's `1e-5` is read as a float by config.load)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


# A file or directory path in a config: `~` is expanded (a hub model name never starts with it).
# Relative paths stay relative to the working directory the command runs in.
PathStr = Annotated[str, AfterValidator(os.path.expanduser)]


class ModelSection(Section):
    """Which model a stage starts from and how it is loaded."""

    name_or_path: PathStr | None = Field(
        None,
        description="Hugging Face hub name or local directory. Empty means: the previous "
        "stage's output in `rlhfkit run` (required when a stage runs alone).",
    )
    tokenizer: PathStr | None = Field(None, description="Tokenizer name/path if it differs from the model's.")
    dtype: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="Weights dtype; auto: bf16 where the GPU supports it, fp32 on CPU. For bf16/fp16 "
        "compute with fp32 master weights use the top-level mixed_precision instead.")
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint. Off unless you trust the source."
    )


class OptimSection(Section):
    """Optimiser, schedule and batch shape for a gradient-based stage."""

    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_eps: float = Field(1e-5, gt=0, description="AdamW epsilon (1e-5, as in the N+ details).")
    epochs: float = Field(3, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps (overrides epochs).")
    batch_size: int = Field(4, gt=0, description="Examples per forward/backward pass (per process).")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimiser step.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up linearly.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Global gradient-norm clip; empty disables it.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, about a third more compute.")
    group_by_length: bool = Field(
        False,
        description="Batch examples of similar length together (transformers' LengthGroupedSampler: shuffled, "
        "then sorted within windows of 50 batches), so less of each batch is padding.",
    )


class DataSection(Section):
    """Where a stage reads its data."""

    path: PathStr | None = Field(
        None,
        description="JSONL file (or a `datasets` name with rlhfkit[datasets]). Empty means: made by "
        "the task in `rlhfkit run`.",
    )
    eval_path: PathStr | None = Field(None, description="Held-out file; if empty, `eval_fraction` of `path` is held out.")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Fraction of `path` held out when no eval_path.")
    max_length: int = Field(512, gt=8, description="Maximum tokens of prompt + response (truncation rule: docs/data.md).")
    max_examples: int | None = Field(None, gt=0, description="Use only the first N training records (debugging).")
    columns: dict[str, str] | None = Field(
        None,
        description="Your column names for rlhfkit's fields, for JSONL and `datasets` sources alike, e.g. "
        "{prompt: question, chosen: good, rejected: bad}; fields not named keep their own name (docs/data.md).",
    )


class LoggingSection(Section):
    """How a stage reports progress."""

    log_every: int = Field(10, gt=0, description="Optimiser steps between metric lines.")
    eval_every: int | None = Field(None, gt=0, description="Optimiser steps between evaluations; empty: at the end of each epoch.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Trackers that mirror metrics.jsonl: tensorboard (STAGE/tensorboard), wandb (offline unless "
        "WANDB_API_KEY/WANDB_MODE say otherwise), mlflow (MLFLOW_TRACKING_URI or RUN_DIR/mlruns); each needs "
        "pip install 'rlhfkit[NAME]'.",
    )
    tensorboard: bool = Field(False, description="Old spelling of report_to: [tensorboard]; true adds tensorboard to report_to.")
    progress: bool = Field(True, description="Show a live progress bar.")

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tensorboard") is True:
            report_to = list(data.get("report_to") or [])
            data = {**data, "report_to": report_to if "tensorboard" in report_to else [*report_to, "tensorboard"]}
        return data

    @field_validator("report_to")
    @classmethod
    def _installed(cls, names: list[str]) -> list[str]:
        from rlhfkit.training.trackers import install_hint, missing_packages

        if len(set(names)) != len(names):
            raise ValueError(f"lists a tracker twice: {names}")
        for name in missing_packages(names):
            raise ValueError(f"{name} needs its optional package: {install_hint(name)}")
        return names


def _check_accumulation(batch_size: int, micro: int, accum: int) -> None:
    if batch_size % (micro * accum) != 0:
        raise ValueError(
            f"batch_size ({batch_size}) must be a multiple of mini_batch_size × "
            f"gradient_accumulation_steps ({micro} × {accum} = {micro * accum})"
        )


__all__ = [
    "Section",
    "PathStr",
    "ModelSection",
    "OptimSection",
    "DataSection",
    "LoggingSection",
    "_check_accumulation",
]
