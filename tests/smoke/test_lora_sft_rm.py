"""LoRA on the SFT and reward-model stages (`sft.lora`, `rm.lora`), through the CLI on the tiny model.

What must hold: only the adapters (and, for the RM, the score head) train; the saved model is a
plain HF checkpoint with the adapters merged in, which scores exactly like the adapted model.
Needs the optional `peft` package (installed by `make test`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config.stages import LoRASection
from rlhfkit.training.metrics import read_metrics

pytest.importorskip("peft")

POSITIVE = ["good", "great", "happy", "love", "joy", "wise"]
NEGATIVE = ["sad", "grey", "rain", "gloomy", "lazy", "never"]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _plain_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after checking it carries no adapter."""
    assert not (model_dir / "adapter_config.json").exists()
    weights = load_file(model_dir / "model.safetensors")
    assert not [k for k in weights if "lora" in k or "modules_to_save" in k or "base_model" in k]
    return weights


def test_sft_lora_trains_only_adapters_and_saves_them_merged(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    data = _write(tmp_path / "sft.jsonl", [
        {"prompt": "the quick", "response": " " + " ".join(rng.choice(POSITIVE) for _ in range(4))} for _ in range(64)])
    out = tmp_path / "run"
    result = _invoke(
        "sft", "-o", str(out), "--set", f"sft.model.name_or_path={tiny_model_dir}", "--set", f"sft.data.path={data}",
        "--set", "sft.lora.r=8", "--set", "sft.optim.learning_rate=1e-2", "--set", "sft.optim.epochs=6",
        "--set", "sft.optim.batch_size=8", "--set", "sft.data.eval_fraction=0.125", "--set", "sft.logging.progress=false",
    )
    assert result.exit_code == 0, result.output
    evals = [m["eval/loss"] for m in read_metrics(out / "sft" / "metrics.jsonl") if "eval/loss" in m]
    assert evals[-1] < evals[0] - 0.1, evals  # random tiny model, adapters on attention only: a small, real fall

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    tuned = _plain_checkpoint(out / "sft" / "model")
    changed = {k for k in tuned if k in base and base[k].shape == tuned[k].shape and not torch.equal(base[k], tuned[k])}
    # GPT-2's LoRA targets are the fused attention projections (c_attn); nothing else may move.
    assert changed and all(".attn.c_attn." in k for k in changed), sorted(changed)
    AutoModelForCausalLM.from_pretrained(out / "sft" / "model")  # loads as a plain causal LM


def _pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": "you will", "chosen": " " + " ".join(rng.choice(POSITIVE) for _ in range(3)),
             "rejected": " " + " ".join(rng.choice(NEGATIVE) for _ in range(3))} for _ in range(n)]


def test_rm_lora_learns_with_a_trainable_head_and_saves_merged(tmp_path, tiny_model_dir):
    train = _write(tmp_path / "prefs.jsonl", _pairs(96, seed=1))
    held_out = _write(tmp_path / "prefs_eval.jsonl", _pairs(40, seed=2))
    out = tmp_path / "run"
    result = _invoke(
        "rm", "-o", str(out), "--set", f"rm.model.name_or_path={tiny_model_dir}", "--set", f"rm.data.path={train}",
        "--set", f"rm.data.eval_path={held_out}", "--set", "rm.lora.r=8", "--set", "rm.optim.learning_rate=3e-3",
        "--set", "rm.optim.epochs=3", "--set", "rm.optim.batch_size=8", "--set", "rm.logging.progress=false",
    )
    assert result.exit_code == 0, result.output
    final = [m for m in read_metrics(out / "rm" / "metrics.jsonl") if "eval/accuracy" in m][-1]
    assert final["eval/accuracy"] >= 0.9

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    tuned = _plain_checkpoint(out / "rm" / "model")
    assert "score.weight" in tuned
    frozen = [k for k in tuned if k in base and ".mlp." in k]
    assert frozen and all(torch.equal(base[k], tuned[k]) for k in frozen)  # only adapters and the head trained
    rm = AutoModelForSequenceClassification.from_pretrained(out / "rm" / "model")
    assert rm.config.rlhfkit_score_std > 0


def test_rm_lora_head_trains_and_merges_into_the_saved_model(tiny_model_dir):
    """Unit level: the score head is a trainable full copy, and `merged` puts the trained copy in place."""
    from rlhfkit.models.load import score_head_name
    from rlhfkit.models.lora import add_lora, merged

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = 0
    adapted = add_lora(model, LoRASection(r=4), where="rm.lora", head=score_head_name(model))
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    assert not any("wte" in n or ".mlp." in n for n in trainable)
    with torch.no_grad():  # stand-in for training: move the head copy and the adapters
        for name, param in adapted.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        plain = merged(adapted)
        assert not any("lora" in k or "modules_to_save" in k for k in plain.state_dict())
        torch.testing.assert_close(plain(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_lora_without_peft_is_one_line_before_work(tmp_path, tiny_model_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)
    data = _write(tmp_path / "prefs.jsonl", _pairs(8, seed=1))
    out = tmp_path / "run"
    result = _invoke("rm", "-o", str(out), "--set", f"rm.model.name_or_path={tiny_model_dir}",
                     "--set", f"rm.data.path={data}", "--set", "rm.lora.r=4")
    assert result.exit_code == 2
    assert "rm.lora needs the optional `peft` package: pip install 'rlhfkit[peft]'" in " ".join(result.output.split())
    assert not (out / "rm").exists()
