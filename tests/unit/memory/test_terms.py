"""Byte formulas against hand-computed values, the ZeRO paper's figures and the HF implementation."""

import pytest
import torch

from rlhfkit.memory import terms as t
from rlhfkit.memory.plan import Settings, _model_states
from rlhfkit.memory.shapes import PRESETS, ModelShape

SMALL = ModelShape("small", "llama", n_layers=2, hidden=128, n_heads=4, n_kv_heads=2, intermediate=384, vocab=512,
                   max_positions=256, tied_embeddings=False)


def test_seed_bytes_per_parameter_and_zero_mixed_precision():
    p = 1_000_000
    assert t.weight_bytes(p, "half") == 2e6  # the seed's 140 GB for 70B: 2 bytes each
    # ZeRO (model states): 2 (fp16 weights) + 2 (fp16 grads) + K = 12 (fp32 master, m, v) = 16 bytes
    mixed = t.weight_bytes(p, "mixed") + t.grad_bytes(p, "mixed") + t.adam_bytes(p, "mixed") + t.master_bytes(p, "mixed")
    assert mixed == 16e6
    assert t.adam_bytes(p, "half") == 4e6  # torch AdamW keeps bf16 moments for bf16 weights


@pytest.mark.parametrize("stage, gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_figure_1_for_7_5b_on_64_devices(stage, gb):
    # Rajbhandari et al. 2020, Figure 1: Ψ = 7.5B, N_d = 64, K = 12 -> 120, 31.4, 16.6, 1.9 GB per device
    states = _model_states("m", 7_500_000_000, 7_500_000_000, Settings(precision="mixed", n_devices=64, zero_stage=stage), False)
    total = sum(x.bytes for x in (*states.device, *states.grads))
    assert total / 1e9 == pytest.approx(gb, abs=0.05)


def test_broken_variant_sharding_without_master_weights_misses_zero_1():
    # forgetting the fp32 master copy (K = 8 instead of 12) gives 30.9 GB, not the paper's 31.4
    broken = 7.5e9 * (2 + 2 + 8 / 64)
    assert abs(broken / 1e9 - 31.4) > 0.4
    states = _model_states("m", 7_500_000_000, 7_500_000_000, Settings(precision="mixed", n_devices=64, zero_stage=1), False)
    real = sum(x.bytes for x in (*states.device, *states.grads))
    assert abs(real - broken) / 1e9 > 0.4  # the planner counts the master copy


def test_kv_cache_of_llama2_7b():
    # 2 (k, v) · 32 layers · 4096 width · 2 bytes = 512 KiB per token; 4096 tokens = 2 GiB
    assert t.kv_cache_bytes(PRESETS["7b"], rows=1, seq=4096, dtype_bytes=2) == 2 * 2**30
    # grouped-query attention: Llama-3-70B keeps 8 of 64 heads -> 2 · 80 · 1024 · 2 = 320 KiB per token
    assert t.kv_cache_bytes(PRESETS["70b"], rows=1, seq=1, dtype_bytes=2) == 320 * 1024


def test_activation_counts_by_hand():
    # per layer 8h + 2kv + 4I = 1024 + 128 + 1536 = 2688 elements per token; outside 3h = 384
    assert t.layer_saved_per_token(SMALL) == 2688
    assert t.activation_bytes(SMALL, tokens=256, dtype_bytes=4, checkpointing=False) == (2 * 2688 + 384) * 256 * 4
    # checkpointed: each layer's input (h) + one layer recomputed + outside
    assert t.activation_bytes(SMALL, tokens=256, dtype_bytes=4, checkpointing=True) == (2 * 128 + 2688 + 384) * 256 * 4
    # LoRA on q, v (frozen base): norms 2h + h, attention 2h + 2kv, MLP 3I, adapters 2r
    assert t.layer_saved_per_token(SMALL, (8, ("q_proj", "v_proj"))) == 3 * 128 + 2 * 128 + 128 + 3 * 384 + 16


def _saved_by_trunk(model, ids) -> int:
    from rlhfkit.memory.measure import LiveBytes, model_tensors

    model.train()
    with LiveBytes() as meter:
        meter.track(model_tensors(model))
        before = meter.live
        hidden = model.model(input_ids=ids).last_hidden_state
        saved = meter.live - before
    del hidden
    return saved


def test_activation_formula_matches_live_bytes_of_hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=128, intermediate_size=384, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512)
    ids = torch.randint(0, 512, (4, 64))
    planned = t.activation_bytes(SMALL, tokens=ids.numel(), dtype_bytes=4, checkpointing=False)
    measured = _saved_by_trunk(LlamaForCausalLM(config), ids)
    assert measured == pytest.approx(planned, rel=0.03)
    # Broken variant: counting a SwiGLU MLP like a fused-GELU one (2I instead of gate, up, silu, product)
    broken = (2 * (8 * 128 + 2 * 64 + 2 * 384) + 3 * 128) * ids.numel() * 4
    assert abs(broken / measured - 1) > 0.15


def test_logit_path_copies_match_rlhfkit_logprobs():
    from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits
    from rlhfkit.memory.measure import LiveBytes

    rows, tr, vocab = 4, 16, 1000
    x = torch.randn(rows, tr, 32, requires_grad=True)
    head = torch.randn(vocab, 32)
    labels = torch.randint(0, vocab, (rows, tr))
    with LiveBytes() as meter:
        meter.track([x, head])
        before = meter.live
        logits = x @ head.t()
        loss = logprobs_from_logits(logits, labels, 0.7).sum() + entropy_from_logits(logits, 0.7).sum()
        del logits
        saved = meter.live - before
        meter.reset_peak()
        loss.backward()
        peak = meter.peak - before
    unit = rows * tr * vocab * 4
    assert saved / unit == pytest.approx(t.LOGIT_COPIES_SAVED, rel=0.02)
    assert peak / unit == pytest.approx(t.LOGIT_COPIES_BACKWARD, rel=0.05)
