"""Reward-model refresh inside PPO, on tiny random-init models: a callable labeler refreshes
the RM every iteration (events, rounds on disk, PPO scoring with the new members); a person's
labels through the CLI stop the run with exit code 4 and `--resume` continues once filled in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.rewards.refresh import LABELS_NEEDED_EXIT_CODE
from rlhfkit.stages import ppo as ppo_stage
from rlhfkit.training.metrics import read_metrics

runner = CliRunner()


def _overrides(model_dir: Path, prompts: Path, *more: str, rm_dir: Path | None = None) -> list[str]:
    return [
        "seed=0", "device=cpu",
        f"ppo.policy.name_or_path={model_dir}", f"ppo.data.path={prompts}",
        f"ppo.reward.model_paths=[{rm_dir or model_dir}]",  # a random-init scalar head on the tiny LM
        "ppo.batch_size=8", "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.ppo_epochs=1",
        "ppo.generation.max_new_tokens=8", "ppo.logging.progress=false", "ppo.num_iterations=3",
        "ppo.reward_refresh.every=1", "ppo.reward_refresh.num_pairs=8", "ppo.reward_refresh.replay_pairs=0",
        "ppo.reward_refresh.optim.batch_size=4", "rm.data.max_length=32",
        *more,
    ]


def test_callable_labeler_refreshes_the_reward_model(tmp_path, tiny_model_dir, tiny_rm_dir, prompts_file, reward_fns):
    # PPO's progress bar is live while the RM trains: the refresh must not open a second one
    cfg = load_config(None, _overrides(tiny_model_dir, prompts_file, "ppo.reward_refresh.labeler=reward_fns:prefer_more_lowercase",
                                       "ppo.logging.progress=true", rm_dir=tiny_rm_dir))
    ppo_stage.validate(cfg)
    out = tmp_path / "ppo"
    ppo_stage.run(cfg, out)

    lines = read_metrics(out / "metrics.jsonl")
    events = [m for m in lines if str(m.get("event", "")).startswith("RM refresh")]
    assert [m["step"] for m in events] == [1, 2]  # after iterations 1 and 2, not after the last one
    assert [m["refresh/round"] for m in events] == [1.0, 2.0]
    assert all(0 < m["refresh/new_pairs"] <= 8 and 0.0 <= m["refresh/rm_accuracy_on_policy_pairs"] <= 1.0 for m in events)
    for k in (1, 2):
        round_dir = out / "refresh" / f"round-{k}"
        assert (round_dir / "rm-0" / "model" / "model.safetensors").is_file()
        assert (round_dir / "new_pairs.jsonl").read_text().count("\n") == events[k - 1]["refresh/new_pairs"]
    # round 2 fine-tuned round 1's weights, which differ from the original RM's
    original = load_file(Path(tiny_model_dir) / "model.safetensors")
    first = load_file(out / "refresh" / "round-1" / "rm-0" / "model" / "model.safetensors")
    key = next(k for k in first if k.endswith("wte.weight"))
    assert not torch.equal(first[key], original[next(k for k in original if k.endswith("wte.weight"))])
    assert [m["step"] for m in lines if "objective/scores" in m] == [1, 2, 3]


def test_task_labeler_outside_the_bundled_task_is_refused(tiny_model_dir, prompts_file):
    cfg = load_config(None, _overrides(tiny_model_dir, prompts_file))  # labeler defaults to "task"
    with pytest.raises(ConfigError, match="labeler 'task' needs the bundled task"):
        ppo_stage.validate(cfg)


def test_file_labeler_stops_for_labels_and_resumes(tmp_path, tiny_model_dir, tiny_rm_dir, prompts_file):
    out = tmp_path / "run"
    args = ["ppo", "-o", str(out), *[a for o in _overrides(tiny_model_dir, prompts_file, "ppo.num_iterations=2",
                                                           "ppo.reward_refresh.labeler=file", rm_dir=tiny_rm_dir)
                                 for a in ("--set", o)]]
    first = runner.invoke(app, args)
    assert first.exit_code == LABELS_NEEDED_EXIT_CODE, first.output
    stage = out / "ppo"  # `rlhfkit ppo -o RUN` trains in RUN/ppo
    to_label = stage / "refresh" / "round-1" / "to_label.jsonl"
    assert "waiting for labels" in first.output and "to_label.jsonl" in first.output.replace("\n", "")
    assert not (stage / "policy").exists()

    again = runner.invoke(app, ["ppo", "--resume", str(out)])  # nothing filled in yet: still waiting
    assert again.exit_code == LABELS_NEEDED_EXIT_CODE, again.output

    rows = [json.loads(line) for line in to_label.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["preferred"] = "a" if i % 2 else "b"
    to_label.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = runner.invoke(app, ["ppo", "--resume", str(out)])
    assert done.exit_code == 0, done.output
    assert (stage / "policy" / "model.safetensors").is_file()
    lines = read_metrics(stage / "metrics.jsonl")
    assert [m["step"] for m in lines if str(m.get("event", "")).startswith("RM refresh")] == [1]
    assert [m["step"] for m in lines if "objective/scores" in m] == [1, 2]
