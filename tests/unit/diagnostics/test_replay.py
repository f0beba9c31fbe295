"""`rlhfkit diagnose`: the monitor's rules over an existing metrics.jsonl."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.diagnostics.replay import replay


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _iteration(step, **extra):
    return {"stage": "ppo", "step": step, "objective/kl": 0.1 * step, "objective/scores": 0.5,
            "objective/scores_std": 0.3, "rollout/eos_fraction": 0.9, **extra}


def test_replay_finds_what_the_live_monitor_would(tmp_path):
    rows = [_iteration(1), _iteration(2), {"step": 2, "event": "best"}, _iteration(3, **{"objective/scores_std": 0.0})]
    iterations, found = replay(_write(tmp_path / "metrics.jsonl", rows))
    assert iterations == 3  # the event line is not an iteration
    assert [d.rule for d in found] == ["reward_collapse"] and found[0].step == 3


def test_diagnose_command(tmp_path):
    run = tmp_path / "run"
    (run / "ppo").mkdir(parents=True)
    _write(run / "ppo" / "metrics.jsonl", [_iteration(1), _iteration(2, **{"rollout/eos_fraction": 0.1})])
    result = CliRunner().invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "missing_eos" in text and "2 iterations, 1 warning(s)" in text
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no PPO metrics.jsonl" in result.output
