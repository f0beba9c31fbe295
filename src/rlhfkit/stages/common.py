"""What every stage returns, and small helpers shared by the stage files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape


@dataclass(frozen=True)
class StageOutput:
    """What a stage leaves behind for the next one and for the summary."""

    checkpoint: Path
    metrics: dict[str, float]


_warned: set[tuple[str, str, int]] = set()


def read_train_and_held_out(data, kind: str, seed: int, where: str, expected: str) -> tuple[list, list]:
    """Validated train and held-out records of `data` (a DataSection).

    Held out: `data.eval_path` when given, else a seeded `eval_fraction` split of `data.path`.
    Raises DataError naming file, line and field, or ConfigError when no path is set.
    """
    from rlhfkit.config.load import ConfigError
    from rlhfkit.data.records import drop_leaked, load_records, split_holdout
    from rlhfkit.training.progress import console

    if not data.path:
        raise ConfigError(f"{where}.data.path is empty: give a JSONL file of {expected}")
    records = load_records(data.path, kind, data.columns)
    if data.eval_path:
        train, held_out = records, load_records(data.eval_path, kind, data.columns)
    else:
        train, held_out = split_holdout(records, data.eval_fraction, seed)
    if data.max_examples:
        train = train[: data.max_examples]
    held_out, leaked = drop_leaked(train, held_out)
    source = data.eval_path or f"the eval_fraction split of {data.path}"
    if leaked and (where, source, leaked) not in _warned:  # validate() and run() both read the data: say it once
        _warned.add((where, source, leaked))
        console.print(f"[yellow]warning[/] \\[{where}] {leaked} held-out records (from {escape(str(source))}) also occur "
                      "in the training data: left out of the held-out set, so they do not inflate its figures",
                      highlight=False, soft_wrap=True)
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


def require_examples(train_data: list, stats, path: str | None, where: str, max_length: int, noun: str) -> None:
    """DataError when tokenization left nothing to train on (before the stage directory is made)."""
    from rlhfkit.data.records import DataError

    if train_data:
        return
    raise DataError(path or f"{where}.data.path", 0, None,
                    f"all {stats.total} training {noun} were dropped by truncation to {max_length} tokens "
                    f"({where}.data.max_length; a preference pair is dropped when the cut leaves chosen and rejected "
                    "identical): raise max_length or shorten the prompts")
