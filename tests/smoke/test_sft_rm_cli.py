"""SFT and reward-model stages through the CLI, on a tiny random-init model (no download)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.training.metrics import read_metrics

runner = CliRunner()

POSITIVE = ["good", "great", "happy", "love", "joy", "wise"]
NEGATIVE = ["sad", "grey", "rain", "gloomy", "lazy", "never"]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _sft_records(n: int) -> list[dict]:
    rng = random.Random(0)
    return [{"prompt": "the quick", "response": " " + " ".join(rng.choice(POSITIVE) for _ in range(4))} for _ in range(n)]


def _pref_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        good = " ".join(rng.choice(POSITIVE) for _ in range(3))
        bad = " ".join(rng.choice(NEGATIVE) for _ in range(3))
        out.append({"prompt": "you will", "chosen": " " + good, "rejected": " " + bad})
    return out


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_help_describes_every_command():
    result = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("run", "sft", "rm", "ppo", "report"):
        assert command in result.stdout
    for command in ("sft", "rm", "ppo", "run"):
        sub = _invoke(command, "--help")
        assert sub.exit_code == 0
        assert "--config" in sub.output and "--set" in sub.output and "--overwrite" in sub.output


def test_sft_loss_falls_and_checkpoint_round_trips(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "sft.jsonl", _sft_records(64))
    out = tmp_path / "run"
    result = _invoke(
        "sft", "-o", str(out),
        "--set", f"sft.model.name_or_path={tiny_model_dir}", "--set", f"sft.data.path={data}",
        "--set", "sft.optim.learning_rate=1e-2", "--set", "sft.optim.epochs=8", "--set", "sft.optim.batch_size=8",
        "--set", "sft.data.eval_fraction=0.125", "--set", "sft.logging.progress=false", "--set", "sft.logging.log_every=1",
    )
    assert result.exit_code == 0, result.output
    metrics = read_metrics(out / "sft" / "metrics.jsonl")
    evals = [m["eval/loss"] for m in metrics if "eval/loss" in m]
    assert evals[-1] < 0.5 * evals[0], evals  # 6-word vocabulary of responses: easy to learn
    model = AutoModelForCausalLM.from_pretrained(out / "sft" / "model")
    assert model.config.pad_token_id != model.config.eos_token_id
    assert (out / "sft" / "model" / "model.safetensors").exists()
    assert not list((out / "sft").glob("*.tmp-*"))
    assert (out / "sft_config.yaml").exists()


def test_reward_model_separates_clear_preferences(tmp_path, tiny_model_dir):
    train = _write(tmp_path / "prefs.jsonl", _pref_records(96, seed=1))
    held_out = _write(tmp_path / "prefs_eval.jsonl", _pref_records(40, seed=2))
    out = tmp_path / "run"
    result = _invoke(
        "rm", "-o", str(out),
        "--set", f"rm.model.name_or_path={tiny_model_dir}", "--set", f"rm.data.path={train}",
        "--set", f"rm.data.eval_path={held_out}", "--set", "rm.optim.learning_rate=3e-3",
        "--set", "rm.optim.epochs=3", "--set", "rm.optim.batch_size=8", "--set", "rm.logging.progress=false",
    )
    assert result.exit_code == 0, result.output
    metrics = read_metrics(out / "rm" / "metrics.jsonl")
    final_eval = [m for m in metrics if "eval/accuracy" in m][-1]
    assert final_eval["eval/accuracy"] >= 0.95
    first_eval = [m for m in metrics if "eval/loss" in m][0]
    assert abs(first_eval["eval/loss"] - 0.6931) < 0.1  # untrained head: ≈ ln 2 (head init std 1/sqrt(d+1))
    rm = AutoModelForSequenceClassification.from_pretrained(out / "rm" / "model")
    assert rm.config.num_labels == 1
    assert isinstance(rm.config.rlhfkit_score_std, float) and rm.config.rlhfkit_score_std > 0


def test_padded_batch_scores_like_single_sequences(tiny_model_dir):
    from rlhfkit.config.sections import ModelSection
    from rlhfkit.models.load import load_reward_model, load_tokenizer
    from rlhfkit.models.scoring import sequence_scores

    section = ModelSection(name_or_path=str(tiny_model_dir))
    tok = load_tokenizer(section, "rm")
    model = load_reward_model(section, tok, "rm").eval()
    seqs = [tok("a happy day")["input_ids"] + [tok.eos_token_id], tok("the sad rain falls on a grey town")["input_ids"]]
    width = max(map(len, seqs))
    for left in (False, True):
        ids = torch.full((2, width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, sl], mask[i, sl] = torch.tensor(s), 1
        with torch.no_grad():
            batched = sequence_scores(model, ids, mask)
            alone = torch.stack([sequence_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
        torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("sft.optim.learning_rate=-1", "sft.optim.learning_rate"),
        ("sft.optim.bogus=1", "sft.optim.bogus: unknown key"),
        ("ppo.mini_batch_size=5", "mini_batch_size"),
        ("sft.optim.batch_size=four", "sft.optim.batch_size"),
    ],
)
def test_bad_config_fails_before_work_with_one_line(tmp_path, override, needle):
    out = tmp_path / "run"
    result = _invoke("sft", "-o", str(out), "--set", override)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bad_data_fails_before_training_naming_line_and_field(tmp_path, tiny_model_dir):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "same", "rejected": "same"}\n')
    out = tmp_path / "run"
    result = _invoke("rm", "-o", str(out), "--set", f"rm.model.name_or_path={tiny_model_dir}", "--set", f"rm.data.path={bad}")
    assert result.exit_code == 2
    assert "prefs.jsonl:2" in result.output and "rejected" in result.output
    assert not (out / "rm" / "model").exists()


def test_missing_model_path_is_reported(tmp_path):
    data = _write(tmp_path / "sft.jsonl", _sft_records(4))
    result = _invoke("sft", "-o", str(tmp_path / "run"), "--set", "sft.model.name_or_path=./no/such/model", "--set", f"sft.data.path={data}")
    assert result.exit_code == 2
    assert "sft.model.name_or_path" in result.output


def test_existing_stage_dir_is_not_overwritten(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "sft.jsonl", _sft_records(8))
    out = tmp_path / "run"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "keep.txt").write_text("precious")
    args = ["sft", "-o", str(out), "--set", f"sft.model.name_or_path={tiny_model_dir}", "--set", f"sft.data.path={data}",
            "--set", "sft.optim.max_steps=1", "--set", "sft.logging.progress=false"]
    result = _invoke(*args)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "sft" / "keep.txt").read_text() == "precious"
    # --overwrite only replaces what rlhfkit wrote: this directory was made by hand (no marker)
    refused = _invoke(*args, "--overwrite")
    assert refused.exit_code == 2 and "--overwrite refuses to delete" in " ".join(refused.output.split())
    assert (out / "sft" / "keep.txt").read_text() == "precious"
    # a run directory rlhfkit made: its stage is replaced
    ours = tmp_path / "ours"
    ours_args = [a if a != str(out) else str(ours) for a in args]
    assert _invoke(*ours_args).exit_code == 0
    first = (ours / "sft" / "model" / "model.safetensors").stat().st_mtime_ns
    assert _invoke(*ours_args).exit_code == 2
    assert _invoke(*ours_args, "--overwrite").exit_code == 0
    assert (ours / "sft" / "model" / "model.safetensors").stat().st_mtime_ns != first
