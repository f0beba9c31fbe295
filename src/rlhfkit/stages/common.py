"""What every stage returns, and small helpers shared by the stage files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageOutput:
    """What a stage leaves behind for the next one and for the summary."""

    checkpoint: Path
    metrics: dict[str, float]


def read_train_and_held_out(data, kind: str, seed: int, where: str, expected: str) -> tuple[list, list]:
    """Validated train and held-out records of `data` (a DataSection).

    Held out: `data.eval_path` when given, else a seeded `eval_fraction` split of `data.path`.
    Raises DataError naming file, line and field, or ConfigError when no path is set.
    """
    from rlhfkit.config.load import ConfigError
    from rlhfkit.data.records import load_records, split_holdout

    if not data.path:
        raise ConfigError(f"{where}.data.path is empty: give a JSONL file of {expected}")
    records = load_records(data.path, kind)
    if data.eval_path:
        train, held_out = records, load_records(data.eval_path, kind)
    else:
        train, held_out = split_holdout(records, data.eval_fraction, seed)
    if data.max_examples:
        train = train[: data.max_examples]
    return train, held_out


def fit_max_length(requested: int, model, where: str) -> int:
    """The length examples are tokenized to: `{where}.data.max_length`, capped at the model's context.

    A longer sequence would index past the model's position table and fail mid-training, so the
    cap is applied (and said) before any batch is built; truncation then follows the stated rule."""
    from rlhfkit.models.load import context_length
    from rlhfkit.training.progress import console

    limit = context_length(model)
    if limit is None or requested <= limit:
        return requested
    console.print(f"\\[{where}] {where}.data.max_length {requested} is more than the model's {limit} positions: "
                  f"examples are truncated to {limit} tokens")
    return limit
