"""bench/compare_trl_flops.py against FLOPs counted by hand on a 1-layer, width-2, vocab-3 GPT-2.

Per token through a block: 2·12·d² = 96 (weights) + 2·2·keys·d = 8·keys (attention); LM head
2·d·V = 12, score head 2·d = 4.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def flops(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import compare_trl_flops

    return compare_trl_flops


def test_forward_counts_weights_attention_and_head(flops):
    m = flops.ModelShape(layers=1, width=2, vocab=3)
    assert flops.forward_flops(m, tokens=1, keys=1, lm_head=True) == 96 + 8 + 12
    assert flops.forward_flops(m, tokens=1, keys=1, lm_head=False) == 96 + 8 + 4
    assert flops.forward_flops(m, tokens=2, keys=2, lm_head=True) == 2 * (96 + 16 + 12)


def test_generation_is_a_prefill_then_one_token_steps_over_a_growing_cache(flops):
    m = flops.ModelShape(1, 2, 3)
    # prefill: 1 token over 1 key = 116; then one step: 1 token over 2 keys = 96 + 16 + 12 = 124
    assert flops.generation_flops(m, batch=1, prompt=1, response=2) == 116 + 124
    assert flops.generation_flops(m, batch=3, prompt=1, response=2) == 3 * 240


def test_iteration_per_side(flops):
    sides = flops.iteration_flops(flops.ModelShape(1, 2, 3), batch=1, prompt=1, response=1, epochs=1)
    lm, scalar = 2 * (96 + 16 + 12), 2 * (96 + 16 + 4)  # 2-token sequences: 248, 232
    assert sides["rlhfkit"] == {"generation": 116, "experience": 2 * lm + 2 * scalar, "update": 3 * (lm + scalar),
                                "total": 116 + 960 + 1440}
    assert sides["trl"]["experience"] == lm + 2 * scalar  # no policy forward: logprobs from generate's logits
    assert sides["trl"]["total"] == 116 + 712 + 1440


def test_a_broken_count_is_caught(flops, monkeypatch):
    """Counting attention over half the keys (a causal-average shortcut) changes the hand value."""
    original = flops.forward_flops
    monkeypatch.setattr(flops, "forward_flops", lambda m, tokens, keys, lm_head: original(m, tokens, keys // 2, lm_head))
    assert flops.generation_flops(flops.ModelShape(1, 2, 3), batch=1, prompt=1, response=2) != 116 + 124
