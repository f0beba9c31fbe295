"""bench/memory_plan.py runs through rlhfkit's current PPO code (it broke once, silently, when
`forward_rollout` was replaced by `make_experience`), and the planner stays within its ±15 % of
the measured live bytes on the GPT-2 cases, padded and packed (`ppo.micro_batch_tokens`; about 15 s
on this CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def memory_plan(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import memory_plan

    threads = torch.get_num_threads()
    yield memory_plan
    torch.set_num_threads(threads)  # main() measures on one thread; the tests after it keep theirs


def test_the_planner_matches_measured_bytes_on_the_gpt2_cases(memory_plan, capsys):
    assert memory_plan.main(["--only", "tiny", "default", "default-packed"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    phases = {(row["case"], row["what"]) for row in result["rows"]}
    for case in ("tiny", "default", "default-packed"):  # every phase of a PPO iteration was measured, not skipped
        assert {(case, f"peak: {p}") for p in ("generation", "experience", "update")} <= {
            (c, w.split(" (")[0]) for c, w in phases}
    assert result["all_within"], result["worst"]
    assert all(row["measured"] > 0 for row in result["rows"])
