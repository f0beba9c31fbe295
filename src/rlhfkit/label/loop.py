"""`ppo.reward_refresh.labeler: web`: an RM-refresh round's pairs labelled in `rlhfkit label serve`.

The refresh writes round-K/to_label.jsonl and stops (exit 4), as with `labeler: file`. A person
serves it (`rlhfkit label serve --file round-K/to_label.jsonl`, which creates the project file
round-K/to_label.labels.sqlite next to it), labels it in the browser, and `--resume` reads the
votes from that project: the majority of each pair's votes is its label ("both bad" and a draw
count as a tie, which the refresh leaves out, as it does a "tie" in the file).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from rlhfkit.config.load import ConfigError
from rlhfkit.label import db
from rlhfkit.label.results import preference_counts


def project_for(to_label: Path) -> Path:
    """Where `rlhfkit label serve --file to_label.jsonl` keeps its project."""
    from rlhfkit.label.cli import default_db

    return default_db(None, to_label)


def labels_from_project(to_label: Path, rows: list[dict]) -> list[str]:
    """"a" / "b" / "tie" per row of to_label.jsonl from the web project's votes; "?" where nobody voted yet."""
    try:
        return _labels(to_label, rows)
    except db.StoreError as err:  # the run's own error type: one line, exit 2
        raise ConfigError(f"ppo.reward_refresh.labeler web: {err}") from None


def _labels(to_label: Path, rows: list[dict]) -> list[str]:
    path = project_for(to_label)
    if not path.is_file():
        return ["?"] * len(rows)
    with closing(db.open_project(path)) as con:
        items, votes = db.items(con), db.votes(con)
    if len(items) != len(rows) or any((i.prompt, i.response_a, i.response_b) != (r["prompt"], r["response_a"], r["response_b"])
                                      for i, r in zip(items, rows)):
        raise db.StoreError(f"{path} does not hold the pairs of {to_label}: delete it and serve the file again")
    choices: dict[int, list[str]] = {}
    for vote in votes:
        choices.setdefault(vote.item_id, []).append(vote.choice)
    labels = []
    for item in items:
        if item.id not in choices:
            labels.append("?")
            continue
        count = preference_counts(choices[item.id])
        labels.append("a" if count["a"] > count["b"] else "b" if count["b"] > count["a"] else "tie")
    return labels
