"""A finished SFT/RM stage deletes its resumable checkpoints (weights again + optimizer state) and
keeps its final model, unless `checkpoint.keep_when_finished: true`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.stages.common import StageOutput
from rlhfkit.training.checkpoint import OPTIMIZER_FILE, list_checkpoints
from rlhfkit.training.resume import drop_finished_checkpoints, mark_finished


def _sft(tmp_path: Path, model_dir: Path, name: str, *extra: str) -> Path:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": "the quick", "response": " brown fox"}) + "\n" for _ in range(16)))
    out = tmp_path / name
    result = CliRunner().invoke(app, [
        "sft", "-o", str(out), "--set", f"sft.model.name_or_path={model_dir}", "--set", f"sft.data.path={data}",
        "--set", "sft.optim.max_steps=4", "--set", "sft.checkpoint.save_every=2", "--set", "sft.logging.progress=false",
        *[a for s in extra for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    return out / "sft"


def test_finished_stage_drops_checkpoints_unless_asked(tmp_path, tiny_model_dir):
    dropped = _sft(tmp_path, tiny_model_dir, "dropped")
    kept = _sft(tmp_path, tiny_model_dir, "kept", "sft.checkpoint.keep_when_finished=true")
    assert not (dropped / "checkpoints").exists()
    assert (dropped / "done.json").is_file()
    AutoModelForCausalLM.from_pretrained(dropped / "model")  # the final model stays
    assert [p.name for p in list_checkpoints(kept / "checkpoints")] == ["step-00000002", "step-00000004"]
    assert all((p / OPTIMIZER_FILE).is_file() for p in list_checkpoints(kept / "checkpoints"))
    # The same run otherwise: identical final weights.
    assert (dropped / "model" / "model.safetensors").read_bytes() == (kept / "model" / "model.safetensors").read_bytes()
    resumed = CliRunner().invoke(app, ["sft", "--resume", str(dropped.parent)])
    assert resumed.exit_code == 0 and "finished before" in resumed.output


def test_drop_refuses_an_unfinished_stage_and_leaves_foreign_files(tmp_path):
    stage = tmp_path / "sft"
    (stage / "checkpoints" / "step-00000002").mkdir(parents=True)
    (stage / "checkpoints" / "step-00000004.tmp-123").mkdir()
    (stage / "checkpoints" / "step-00000002" / "optimizer.pt").write_bytes(b"x" * 100)
    (stage / "checkpoints" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="not finished"):
        drop_finished_checkpoints(stage)
    (stage / "model").mkdir()
    mark_finished(stage, StageOutput(checkpoint=stage / "model", metrics={}))  # default: keeps them
    assert (stage / "checkpoints" / "step-00000002").is_dir()
    assert drop_finished_checkpoints(stage) == 100
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["notes.txt"]
