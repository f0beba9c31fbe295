"""bench/compare_trl_work.py builds the work both sides read through rlhfkit's own loaders, so a
change to those loaders' signatures breaks the benchmark before it measures anything (it did:
`load_prompts` grew a fourth return value). Built here at the smallest size the benchmark allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def work(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import compare_trl_work

    return compare_trl_work


def test_build_work_gives_prompts_of_exactly_the_asked_length(work, tmp_path):
    built = work.build_work(tmp_path, layers=1, width=64, response_length=4, batch=8, prompt_tokens=6)
    assert len(built["prompt_ids"]) == 8
    assert all(len(ids) == 6 for ids in built["prompt_ids"])
    rows = [json.loads(line) for line in Path(built["prompts_jsonl"]).read_text().splitlines()]
    assert len(rows) == 8 and all(set(r) == {"prompt"} for r in rows)
    for name in ("policy", "reward_model"):
        assert (Path(built[name]) / "model.safetensors").exists()
    assert built["vocab_size"] == work.VOCAB
