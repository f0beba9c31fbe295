"""Fixtures for the rollout tests: the tiny policy (dropout off, eval mode) and hand-made rollouts."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.models.load import disable_dropout


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    """The tiny random-init GPT-2 as PPO loads it: dropout off, eval mode."""
    return disable_dropout(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).eval()


class FixedBackend:
    """A GenerationBackend that returns pre-chosen raw response ids (what `generate` would)."""

    def __init__(self, raw: torch.Tensor):
        self.raw = raw
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        self.calls.append((query_ids, query_mask))
        return self.raw.clone()


@pytest.fixture
def fixed_backend():
    return FixedBackend
