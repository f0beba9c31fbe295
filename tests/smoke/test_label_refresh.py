"""`ppo.reward_refresh.labeler: web`: the run stops for labels (exit 4), a person labels the round's pairs
in `rlhfkit label` (here: votes stored through the app's own storage), and `--resume` goes on with them."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.label import db
from rlhfkit.label.cli import create_project
from rlhfkit.label.loop import project_for
from rlhfkit.rewards.refresh import LABELS_NEEDED_EXIT_CODE
from rlhfkit.training.metrics import read_metrics

runner = CliRunner()


def _overrides(model_dir: Path, rm_dir: Path, prompts: Path) -> list[str]:
    return [
        "seed=0", "device=cpu", f"ppo.policy.name_or_path={model_dir}", f"ppo.data.path={prompts}",
        f"ppo.reward.model_paths=[{rm_dir}]", "ppo.batch_size=8", "ppo.mini_batch_size=4",
        "ppo.gradient_accumulation_steps=1", "ppo.ppo_epochs=1", "ppo.generation.max_new_tokens=8",
        "ppo.logging.progress=false", "ppo.num_iterations=2", "ppo.reward_refresh.every=1",
        "ppo.reward_refresh.num_pairs=8", "ppo.reward_refresh.replay_pairs=0", "ppo.reward_refresh.optim.batch_size=4",
        "rm.data.max_length=32", "ppo.reward_refresh.labeler=web",
    ]


def test_web_labeler_stops_for_labels_and_resumes_with_the_votes(tmp_path, tiny_model_dir, tiny_rm_dir, prompts_file):
    out = tmp_path / "run"
    first = runner.invoke(app, ["ppo", "-o", str(out), *[a for o in _overrides(tiny_model_dir, tiny_rm_dir, prompts_file) for a in ("--set", o)]])
    assert first.exit_code == LABELS_NEEDED_EXIT_CODE, first.output
    assert "rlhfkit label serve --file" in first.output.replace("\n", "")
    to_label = out / "ppo" / "refresh" / "round-1" / "to_label.jsonl"

    # What `rlhfkit label serve --file to_label.jsonl --annotators ann,bob --overlap 2` creates.
    create_project(project_for(to_label), None, to_label, "ann,bob", 2, None, None, None, seed=0)
    again = runner.invoke(app, ["ppo", "--resume", str(out)])  # nobody has voted yet: still waiting
    assert again.exit_code == LABELS_NEEDED_EXIT_CODE, again.output

    with closing(db.open_project(project_for(to_label))) as con:
        for person in db.annotators(con):
            for item in db.items(con):
                db.add_vote(con, item.id, person.id, "a" if item.id % 2 else "b", {})
    done = runner.invoke(app, ["ppo", "--resume", str(out)])
    assert done.exit_code == 0, done.output
    lines = read_metrics(out / "ppo" / "metrics.jsonl")
    assert [m["step"] for m in lines if str(m.get("event", "")).startswith("RM refresh")] == [1]
    new_pairs = [json.loads(line) for line in (to_label.parent / "new_pairs.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in to_label.read_text().splitlines()]
    # every labelled pair with two distinct, non-empty responses became a record, oriented as voted
    expected = [(r["prompt"], r["response_a"] if i % 2 == 0 else r["response_b"]) for i, r in enumerate(rows)
                if r["response_a"] != r["response_b"] and r["response_a"].strip() and r["response_b"].strip()]
    assert [(p["prompt"], p["chosen"]) for p in new_pairs] == expected
