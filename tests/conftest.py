"""Shared fixtures: a tiny random-init model built locally (no download), small JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhfkit.models.tiny import build_tiny_model, build_tiny_tokenizer

torch.set_num_threads(1)  # two cores, tests running side by side: keep each one lean


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tiny_tokenizer)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
