"""Sequences must fit the model's position table: SFT/RM cap max_length, PPO refuses before rollouts."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.models.load import context_length
from rlhfkit.stages.common import fit_max_length
from rlhfkit.stages.ppo import check_fits_context


@pytest.fixture(scope="module")
def model_64():
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=16, n_layer=1, n_head=2))


def test_context_length_reads_the_config(model_64):
    assert context_length(model_64) == 64


def test_max_length_is_capped_at_the_context(model_64, capsys):
    assert fit_max_length(32, model_64, "sft") == 32
    assert fit_max_length(512, model_64, "sft") == 64
    assert "[sft] sft.data.max_length 512 is more than the model's 64 positions" in " ".join(capsys.readouterr().err.split())  # rich writes to stderr and wraps


def test_ppo_refuses_prompts_plus_budget_beyond_the_context():
    ppo = load_config(None, ["ppo.generation.max_new_tokens=16", "ppo.data.path=prompts.jsonl"]).ppo
    check_fits_context(ppo, [[1] * 48, [1] * 3], 64)  # 48 + 16 = 64 fits exactly
    check_fits_context(ppo, [[1] * 500], None)  # a model that does not say: nothing to check
    with pytest.raises(ConfigError, match=r"prompts.jsonl: the longest prompt \(49 tokens\).*= 65 .* 64 positions"):
        check_fits_context(ppo, [[1] * 49], 64)
