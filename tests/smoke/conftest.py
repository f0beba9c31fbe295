"""Fixtures shared by the PPO smoke tests: importable reward callables and a small prompts file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.models.tiny import SAMPLE_TEXT

HERE = Path(__file__).parent


@pytest.fixture
def reward_fns(monkeypatch):
    """tests/smoke/reward_fns.py, importable as `reward_fns` (ppo.reward.callable=reward_fns:...)."""
    monkeypatch.syspath_prepend(str(HERE))
    import reward_fns

    return reward_fns


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    """16 three-word prompts cut from the tiny tokenizer's sample text."""
    words = " ".join(SAMPLE_TEXT).split()
    path = tmp_path_factory.mktemp("ppo_data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": " ".join(words[i : i + 3])}) + "\n" for i in range(0, 48, 3)))
    return path


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny LM saved as a reward model: its (random) score head is now part of the checkpoint,
    which PPO requires of anything it scores with."""
    from rlhfkit.config.sections import ModelSection
    from rlhfkit.models.load import load_reward_model, load_tokenizer

    section = ModelSection(name_or_path=str(tiny_model_dir))
    tokenizer = load_tokenizer(section, "rm.model")
    out = tmp_path_factory.mktemp("tiny_rm") / "model"
    load_reward_model(section, tokenizer, "rm.model").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
