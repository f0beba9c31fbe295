"""Config values that used to be coerced or passed through silently: strict types (but YAML's 1e-5 is
a float), `~` in paths, the seed's range, --set values that are not YAML, hardware the machine lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhfkit.config.hardware import check_hardware
from rlhfkit.config.load import ConfigError, load_config, resolve_output_dir


@pytest.mark.parametrize("override, needle", [
    ("sft.optim.epochs=true", "sft.optim.epochs: Input should be a valid number"),
    ('sft.optim.batch_size="8"', "sft.optim.batch_size: Input should be a valid integer"),
    ("sft.optim.batch_size=8.0", "sft.optim.batch_size: Input should be a valid integer"),
    ("ppo.whiten_advantages=1", "ppo.whiten_advantages: Input should be a valid boolean"),
    ('seed="3"', "seed: Input should be a valid integer"),
    ("sft.model.name_or_path=12", "sft.model.name_or_path: Input should be a valid string"),
])
def test_coercions_that_hide_a_mistake_are_refused(override, needle):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert needle in str(raised.value)


def test_yaml_floats_and_ints_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  optim:\n    learning_rate: 1e-5\n    epochs: 2\nrm:\n  optim:\n    learning_rate: 3.0e-4\n")
    cfg = load_config(path, ["ppo.learning_rate=2E-6", "ppo.kl.kl_coef=1"])
    assert cfg.sft.optim.learning_rate == 1e-5 and isinstance(cfg.sft.optim.learning_rate, float)
    assert cfg.sft.optim.epochs == 2.0 and cfg.rm.optim.learning_rate == 3e-4
    assert cfg.ppo.learning_rate == 2e-6 and cfg.ppo.kl.kl_coef == 1.0
    assert load_config(None, ["sft.optim.batch_size=8"]).sft.optim.batch_size == 8


def test_tilde_is_expanded_in_every_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, ["output_dir=~/runs/x", "sft.model.name_or_path=~/models/base", "sft.data.path=~/d.jsonl",
                             "rm.data.eval_path=~/e.jsonl", "ppo.reward.model_paths=[~/rm]", "sft.model.tokenizer=~/tok"])
    assert resolve_output_dir(cfg) == tmp_path / "runs/x"
    assert cfg.sft.model.name_or_path == str(tmp_path / "models/base") and cfg.sft.model.tokenizer == str(tmp_path / "tok")
    assert cfg.sft.data.path == str(tmp_path / "d.jsonl") and cfg.rm.data.eval_path == str(tmp_path / "e.jsonl")
    assert cfg.ppo.reward.model_paths == [str(tmp_path / "rm")]
    assert load_config(None, ["sft.model.name_or_path=gpt2"]).sft.model.name_or_path == "gpt2"  # hub names untouched


@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_a_seed_out_of_range_is_one_line(seed):
    with pytest.raises(ConfigError, match=r"seed: Input should be (greater|less) than or equal to"):
        load_config(None, [f"seed={seed}"])
    assert load_config(None, [f"seed={2**32 - 1}"]).seed == 2**32 - 1


@pytest.mark.parametrize("value", ["[1, 2", "{a: 1", "a: b: c", "'unclosed"])
def test_a_set_value_that_is_not_yaml_is_one_line(value):
    with pytest.raises(ConfigError, match=r"--set ppo.learning_rate: .* is not valid YAML"):
        load_config(None, [f"ppo.learning_rate={value}"])


@pytest.mark.parametrize("overrides, needle", [
    (["device=cuda"], "device: cuda, but torch finds no CUDA GPU"),
    (["device=mps"], "device: mps, but torch finds no Apple MPS device"),
    (["mixed_precision=fp16"], "mixed_precision: fp16 needs a CUDA GPU"),
    (["mixed_precision=fp16", "device=cpu"], "mixed_precision: fp16 needs a CUDA GPU, but device is cpu"),
])
def test_hardware_the_machine_lacks_is_refused(monkeypatch, overrides, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=needle):
        check_hardware(load_config(None, overrides))
    check_hardware(load_config(None, ["device=cpu"]))
    check_hardware(load_config(None, []))  # auto: whatever there is
    check_hardware(load_config(None, ["device=cpu", "mixed_precision=bf16"]))  # CPU autocast is real


def test_hardware_that_is_there_is_accepted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_hardware(load_config(None, ["device=cuda", "mixed_precision=bf16"]))
    with pytest.raises(ConfigError, match="device is cpu"):
        check_hardware(load_config(None, ["device=cpu", "mixed_precision=fp16"]))
