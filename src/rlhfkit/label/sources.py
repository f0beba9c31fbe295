"""What there is to label: items read from a run directory or a JSONL file.

- a run directory (`--run RUN`): RUN/eval/before.jsonl (SFT) and after.jsonl (PPO), one
  response per held-out prompt, written by `rlhfkit run`; item i compares SFT's and PPO's
  responses to prompt i (origins "sft" / "ppo", which the report's human evaluation reads);
- an RM-refresh round's `to_label.jsonl` ({prompt, response_a, response_b, "preferred": ...});
- any preference JSONL ({prompt, chosen, rejected}; origins "chosen" / "rejected", so that
  the people's agreement with the file's own labels can be measured).

The side shown on the left is drawn per annotator when the project is created (db.py), so the
order here does not leak into the votes. Bad input is a `DataError` naming file, line, field.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data.records import DataError, jsonl_objects, read_preferences
from rlhfkit.label.db import Item


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    """The project's JSONL reader (UTF-8 with or without a BOM, one object a line, one-line errors)."""
    return jsonl_objects(path)


def _string(row: dict, key: str, path: Path, line: int, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataError(path, line, key, "missing" if key not in row else "must be a non-empty string")
    return value


def from_run(run_dir: Path, max_items: int | None = None) -> list[Item]:
    """SFT (before) vs PPO (after) responses on the run's held-out prompts."""
    before_path, after_path = run_dir / "eval" / "before.jsonl", run_dir / "eval" / "after.jsonl"
    if not (before_path.is_file() and after_path.is_file()):
        raise DataError(run_dir, 0, None, "no eval/before.jsonl and eval/after.jsonl: not a finished `rlhfkit run` directory")
    before, after = _jsonl_rows(before_path), _jsonl_rows(after_path)
    if len(before) != len(after):
        raise DataError(after_path, 0, None, f"{len(after)} records, but before.jsonl has {len(before)}")
    items = []
    for (line, sft), (_, ppo) in zip(before, after):
        prompt = _string(sft, "prompt", before_path, line)
        if ppo.get("prompt") != prompt:
            raise DataError(after_path, line, "prompt", "differs from before.jsonl's prompt on the same line")
        # A policy may answer with nothing at all (EOS at once): that is still a response to judge.
        items.append(Item(len(items) + 1, prompt, _string(sft, "response", before_path, line, allow_empty=True),
                          _string(ppo, "response", after_path, line, allow_empty=True), "sft", "ppo", line))
    return items[:max_items]


def from_file(path: Path, max_items: int | None = None) -> list[Item]:
    """A to_label.jsonl (response_a / response_b) or a preference file (chosen / rejected)."""
    rows = _jsonl_rows(path)
    line, first = rows[0]
    if "response_a" not in first and "chosen" not in first:
        raise DataError(path, line, None, "expected pairs to compare, {prompt, response_a, response_b} or {prompt, chosen, "
                        "rejected}; a prompts file has no responses yet (`--run RUN` compares a run's SFT and PPO responses)")
    if "response_a" in first:
        items = [Item(i + 1, _string(row, "prompt", path, line), _string(row, "response_a", path, line, True),
                      _string(row, "response_b", path, line, True), "a", "b", line)
                 for i, (line, row) in enumerate(rows)]
    else:
        lines = [line for line, _ in rows]
        items = [Item(i + 1, p.prompt, p.chosen, p.rejected, "chosen", "rejected", lines[i])
                 for i, p in enumerate(read_preferences(path))]
    return items[:max_items]
