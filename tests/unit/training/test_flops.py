"""FLOP counts by hand, the GPU peak table, and the matmul ceiling."""

from __future__ import annotations

import torch

from rlhfkit.memory.shapes import ModelShape
from rlhfkit.training.flops import (
    PPOShapes,
    block_matmul_params,
    forward_flops,
    gpu_peak,
    measure_matmul_ceiling,
    mfu,
    ppo_phase_flops,
    training_flops,
)

# 1 layer, width 2, MLP width 8, vocabulary 10
GPT2 = ModelShape("g", "gpt2", n_layers=1, hidden=2, n_heads=1, n_kv_heads=1, intermediate=8, vocab=10,
                  max_positions=16, tied_embeddings=True)
LLAMA = ModelShape("l", "llama", n_layers=2, hidden=4, n_heads=2, n_kv_heads=1, intermediate=8, vocab=10,
                   max_positions=16, tied_embeddings=True)


def test_block_matmul_params_by_hand():
    # GPT-2: q, o 2·2 each; k, v 2·2 each (kv width 2); MLP 2·8 + 8·2 -> 8 + 8 + 32 = 48
    assert block_matmul_params(GPT2) == 48
    # Llama, grouped-query: q, o 4·4 each = 32; k, v 4·2 each = 16 (kv width 1 head × 2); SwiGLU 3·4·8 = 96 -> 144
    assert block_matmul_params(LLAMA) == 144


def test_forward_flops_by_hand():
    # one row of n = 3 real tokens, r = 2 of them response:
    # linear 2·L·48·3 = 288; attention 4·L·d·(1 + 2 + 3) = 4·2·6 = 48; LM head 2·d·V·r = 2·2·10·2 = 80
    assert forward_flops(GPT2, torch.tensor([3]), torch.tensor([2])) == 288 + 48 + 80
    # a critic (no LM head) over two rows n = 3 and 1: linear 2·48·4 = 384; attention 4·2·(6 + 1) = 56
    assert forward_flops(GPT2, torch.tensor([3, 1]), None) == 384 + 56
    assert training_flops(100.0) == 300.0


def test_attention_without_the_causal_half_is_caught():
    """Broken variant: counting n² (query, key) pairs instead of n(n+1)/2 gives 4·2·9 = 72 for the
    attention of the row above, and the total no longer matches the hand count."""
    n = torch.tensor([3.0])
    broken = 2 * 48 * 3 + 4 * 2 * float((n * n).sum()) + 80
    assert broken != forward_flops(GPT2, torch.tensor([3]), torch.tensor([2]))


def test_ppo_phase_flops_by_hand():
    q, r = torch.tensor([1]), torch.tensor([2])  # one row, n = 3
    policy = 288 + 48 + 80  # as above
    critic = 288 + 48
    flops = ppo_phase_flops(PPOShapes(GPT2, GPT2, (GPT2,)), q, r, epochs=4)
    assert flops == {"generation": policy, "experience": 2 * policy + critic + critic,
                     "policy_update": 4 * 3 * policy, "critic_update": 4 * 3 * critic}
    shared = ppo_phase_flops(PPOShapes(GPT2, None, ()), q, r, epochs=1)  # value head on the policy, callable reward
    assert shared["critic_update"] == 0.0 and shared["experience"] == 2 * policy


def test_gpu_peaks_and_mfu():
    assert gpu_peak("NVIDIA H100 80GB HBM3", half_precision=True) == 989e12
    assert gpu_peak("NVIDIA H100 PCIe", half_precision=True) == 756e12  # the PCIe entry is matched first
    assert gpu_peak("NVIDIA A100-SXM4-80GB", half_precision=False) == 19.5e12
    assert gpu_peak("Some Future GPU", half_precision=True) is None
    assert mfu(50.0, 2.0, 100.0) == 0.25 and mfu(1.0, 0.0, 100.0) == 0.0


def test_matmul_ceiling_is_a_plausible_cpu_rate():
    flops = measure_matmul_ceiling(size=256, repeats=2)
    assert 1e8 < flops < 1e14  # 0.1 GFLOP/s … 100 TFLOP/s: a number, not a placeholder


def test_iteration_figures_by_hand():
    from rlhfkit.metric_names import M
    from rlhfkit.training.throughput import iteration_figures

    q, r = torch.tensor([1]), torch.tensor([2])
    policy, critic = 288 + 48 + 80, 288 + 48  # as in test_ppo_phase_flops_by_hand
    figures = iteration_figures(PPOShapes(GPT2, GPT2, ()), q, r, epochs=4, seconds=(2.0, 4.0, 8.0), peak=100.0,
                                world_size=2, all_sum=lambda t: t * 2)  # two processes with the same rows
    assert figures[M.GENERATION_TFLOP] == 2 * policy / 1e12
    assert figures[M.GENERATION_MFU] == 2 * policy / (2.0 * 100.0 * 2)  # global FLOPs / (s × peak × processes)
    assert figures[M.UPDATE_MFU] == 2 * 12 * (policy + critic) / (8.0 * 100.0 * 2)
    assert figures[M.EXPERIENCE_TOKENS_PER_SECOND] == 2 * 3 / 4.0 and figures[M.UPDATE_TOKENS_PER_SECOND] == 2 * 3 * 4 / 8.0
    no_peak = iteration_figures(PPOShapes(GPT2, None, ()), q, r, 1, (1.0, 1.0, 1.0), None, 1, lambda t: t)
    assert M.GENERATION_MFU not in no_peak and M.PEAK_FLOPS not in no_peak  # an unknown GPU logs no MFU
