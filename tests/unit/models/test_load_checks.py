"""Loading refuses weights that do not fit: another architecture's config over the weights (which
transformers would fill with random values, warning only), truncated / garbage / pickle-only /
wrong-shape weights, each one line naming the directory or file. A reward model's fresh score head
is expected, and said once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from rlhfkit.config.sections import ModelSection
from rlhfkit.models import load as load_module
from rlhfkit.models.load import ModelLoadError, load_causal_lm, load_reward_model, load_tokenizer
from rlhfkit.training.progress import console


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _load(path: Path, kind: str = "causal"):
    section = ModelSection(name_or_path=str(path))
    tokenizer = load_tokenizer(section, "sft.model")
    loader = load_causal_lm if kind == "causal" else load_reward_model
    return loader(section, tokenizer, "sft.model" if kind == "causal" else "rm.model")


def test_a_config_of_another_architecture_is_refused(tmp_path, tiny_model_dir, tiny_tokenizer):
    other = _copy(tiny_model_dir, tmp_path / "other")
    LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2).save_pretrained(other)
    for kind in ("causal", "rm"):
        with pytest.raises(ModelLoadError) as raised:
            _load(other, kind)
        message = str(raised.value)
        assert f"the weights in {other} do not match its config.json" in message
        assert "missing from the checkpoint" in message and "model.embed_tokens.weight" in message
        assert "\n" not in message


def test_unused_trunk_weights_are_refused(tmp_path, tiny_model_dir):
    """Fewer layers in config.json than in the weights: layer 1 would be silently dropped."""
    fewer = _copy(tiny_model_dir, tmp_path / "fewer")
    config = json.loads((fewer / "config.json").read_text())
    config["n_layer"] = 1
    (fewer / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"not used by the model in the checkpoint \(transformer\.h\.1\."):
        _load(fewer)


def _break(path: Path, how: str) -> None:
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        weights.write_bytes(b"\x00garbage" * 100)
    elif how == "pickle-only":
        model = AutoModelForCausalLM.from_pretrained(path)
        weights.unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    elif how == "wrong-shape":
        config = json.loads((path / "config.json").read_text())
        config["n_embd"] = 64
        (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("how, file, needle", [
    ("truncated", "model.safetensors", "Error while deserializing header"),
    ("garbage", "model.safetensors", "Error while deserializing header"),
    ("pickle-only", "pytorch_model.bin", "rlhfkit loads safetensors only, never unpickles"),
    ("wrong-shape", "model.safetensors", "weight shapes do not match its config.json"),
])
def test_bad_weights_files_are_one_line_naming_the_file(tmp_path, tiny_model_dir, how, file, needle):
    broken = _copy(tiny_model_dir, tmp_path / how)
    _break(broken, how)
    with pytest.raises(ModelLoadError) as raised:
        _load(broken)
    message = str(raised.value)
    assert message.startswith(f"sft.model: cannot load causal LM from {broken / file}: ")
    assert needle in message and "\n" not in message


def test_a_fresh_score_head_is_fine_and_said_once(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(load_module, "_announced", set())
    with console.capture() as captured:
        _load(tiny_model_dir, "rm")
        _load(tiny_model_dir, "rm")
    text = " ".join(captured.get().split())
    assert text.count("has no score head yet: a fresh one is initialised") == 1


def test_a_fresh_head_is_random_for_a_reward_model_and_zero_for_a_critic(tiny_model_dir):
    section = ModelSection(name_or_path=str(tiny_model_dir))
    tokenizer = load_tokenizer(section, "rm.model")
    rm = load_reward_model(section, tokenizer, "rm.model")
    d = rm.score.in_features
    # N(0, 1/sqrt(d+1)): the sample std is near 1/sqrt(d+1), far from 0
    assert rm.score.weight.std().item() == pytest.approx(1 / (d + 1) ** 0.5, rel=0.3)
    critic = load_reward_model(section, tokenizer, "ppo.value_model", fresh_init="zero")
    assert torch.count_nonzero(critic.score.weight) == 0
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(critic(input_ids=ids).logits, torch.zeros(1, 1))  # every value starts at 0


def test_a_trained_head_is_kept_whatever_the_fresh_init(tiny_model_dir, tmp_path):
    section = ModelSection(name_or_path=str(tiny_model_dir))
    tokenizer = load_tokenizer(section, "rm.model")
    rm = load_reward_model(section, tokenizer, "rm.model")
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    saved = rm.score.weight.detach().clone()
    critic = load_reward_model(ModelSection(name_or_path=str(tmp_path / "rm")), tokenizer, "ppo.value_model",
                               fresh_init="zero")
    assert torch.equal(critic.score.weight, saved)
