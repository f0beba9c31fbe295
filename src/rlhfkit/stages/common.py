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
