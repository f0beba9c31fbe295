"""`rlhfkit plan` and the pre-flight check through the CLI (no weights are needed: nothing loads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def machine_with_24_gb(monkeypatch):
    """The pre-flight sees a 24 GB CPU machine whatever this one has (the refusals must not depend on it)."""
    from rlhfkit.memory import preflight
    from rlhfkit.memory.devices import DeviceBudget

    monkeypatch.setattr(preflight, "detect", lambda device="auto": DeviceBudget("cpu", 1, 24e9, "available RAM (CPU)"))


@pytest.fixture(scope="module")
def llama_7b_dir(tmp_path_factory) -> Path:
    """A Llama-2-7B-shaped config.json and a tokenizer file that is never read (the source check only
    sees that one is there), no weights: the pre-flight must refuse before anything is loaded."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("llama7b")
    LlamaConfig(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096).save_pretrained(path)
    (path / "tokenizer.json").write_text("{}")
    return path


def _sft_data(tmp_path: Path) -> Path:
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"hi {i}", "response": " there"}) + "\n" for i in range(20)))
    return path


def test_plan_reproduces_the_seeds_70b_table():
    result = runner.invoke(app, ["plan", "--model", "70b", "--gpu", "a100-80g", "--seed-assumptions"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "847 GB" in result.output and "~840GB" in result.output  # policy 282 + ref 141 + RM 141 + critic 282
    assert "does NOT fit" in result.output and "ZeRO-3 / FSDP over" in result.output


def test_plan_of_the_default_run_fits_this_machine():
    result = runner.invoke(app, ["plan"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fortunes default base" in result.output and ": fits" in result.output


def test_plan_refuses_bad_flags_in_one_line():
    result = runner.invoke(app, ["plan", "--model", "70b", "--gpu", "a100-80g", "--gpu-memory", "80GiB"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: give --gpu or --gpu-memory, not both"]
    result = runner.invoke(app, ["plan", "--model", "no-such-model"])
    assert result.exit_code == 2 and "never downloads" in result.output


def test_preflight_refuses_a_7b_sft_on_this_machine(tmp_path, llama_7b_dir):
    args = ["sft", "--set", f"sft.model.name_or_path={llama_7b_dir}", "--set", f"sft.data.path={_sft_data(tmp_path)}",
            "--set", "device=cpu", "-o", str(tmp_path / "run")]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "the memory plan needs" in error[0] and "largest term: model Adam m, v" in error[0]
    assert "fix" in error[0] or "saving" in error[0]
    assert not (tmp_path / "run" / "sft" / "model").exists()  # refused before any model was loaded


def test_preflight_warn_lets_the_run_go_on(tmp_path, llama_7b_dir):
    args = ["sft", "--set", f"sft.model.name_or_path={llama_7b_dir}", "--set", f"sft.data.path={_sft_data(tmp_path)}",
            "--set", "device=cpu", "--set", "preflight=warn", "-o", str(tmp_path / "run")]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    # the warning is printed, then the run tries to load the model — which has no tokenizer or weights here
    assert "warning" in result.output and "the memory plan needs" in result.output
    assert "cannot load tokenizer" in result.output or "cannot load" in result.output


def test_preflight_off_skips_the_check(tmp_path, llama_7b_dir):
    args = ["sft", "--set", f"sft.model.name_or_path={llama_7b_dir}", "--set", f"sft.data.path={_sft_data(tmp_path)}",
            "--set", "preflight=off", "-o", str(tmp_path / "run")]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert "[plan]" not in result.output and "memory plan" not in result.output
    assert "cannot load" in result.output  # it went on to load the model (which has no weights here)


def test_preflight_refuses_a_7b_ppo_naming_the_largest_term(tmp_path, llama_7b_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"hi {i}"}) + "\n" for i in range(8)))
    args = ["ppo", "--set", f"ppo.policy.name_or_path={llama_7b_dir}", "--set", f"ppo.data.path={prompts}",
            "--set", "ppo.reward.callable=os:getcwd", "--set", "device=cpu", "-o", str(tmp_path / "run")]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "[plan] ppo: needs" in result.output  # the verdict line comes first
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "ppo: the memory plan needs" in error[0] and "largest term: policy" in error[0]
