"""Model FLOPs of each PPO phase and the model FLOPs utilisation (MFU) they reach.

Counted (Kaplan et al. 2020, §2.1; Chowdhery et al. 2022, PaLM appendix B), per row of n real
tokens (prompt + response up to EOS) of which r are response tokens:

    forward     2 · P_layers · n             every linear of every block (P_layers = L × block matmul
                                             weights: q, k, v, o and the MLP; biases and norms left out)
              + 4 · L · d · n(n+1)/2         causal attention: QKᵀ and A·V, 2·d FLOPs each per (query,
                                             key) pair, token i attends to i + 1 keys
              + 2 · d · V · r                the LM head at the positions that predict the response
                                             (rlhfkit computes it nowhere else); critics and reward
                                             models have a scalar head instead, left out
    training    3 × forward                  the backward pass costs twice the forward (Kaplan: 6N per
                                             token); gradient-checkpoint recomputation is not useful work
                                             and is not counted

Only real tokens count — padding a forward computes is waste, so a padded batch shows a lower
MFU than a packed one doing the same useful work. Generation is counted as one forward over the
prompt and the sampled tokens (the KV cache makes each new token cost one token's forward).

MFU = counted FLOPs / (seconds × peak FLOP/s). The peak (`peak_flops`): on a GPU the dense
16-bit tensor-core figure of its datasheet for bf16/fp16 runs and the plain fp32 figure otherwise
(`GPU_PEAKS`, by device name), on a CPU the best of a few fp32 matmuls measured once at start
(`measure_matmul_ceiling`: what this CPU reaches at this thread count — under load from other
jobs it reads low and the MFU high), or `ppo.logging.peak_flops` when given.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch

from rlhfkit.memory.shapes import ModelShape


def block_matmul_params(shape: ModelShape) -> int:
    """Weights of one block's linears (q, k, v, o, MLP): what the per-token matmul FLOPs multiply."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    mlp = 2 * h * i if shape.layout == "gpt2" else 3 * h * i
    return 2 * h * h + 2 * h * kv + mlp


def forward_flops(shape: ModelShape, lengths: torch.Tensor, response_lengths: torch.Tensor | None) -> float:
    """Forward FLOPs over rows of `lengths` real tokens; `response_lengths` (LM head positions per row)
    None for a critic or reward model (scalar head)."""
    n = lengths.double()
    linear = 2.0 * shape.n_layers * block_matmul_params(shape) * n.sum()
    attention = 4.0 * shape.n_layers * shape.hidden * (n * (n + 1) / 2).sum()
    head = 2.0 * shape.hidden * shape.vocab * response_lengths.double().sum() if response_lengths is not None else 0.0
    return float(linear + attention + head)


def training_flops(forward: float) -> float:
    """Forward + backward: the backward pass costs two forwards."""
    return 3.0 * forward


#: Dense peak FLOP/s from NVIDIA's datasheets: (16-bit tensor core, fp32). Matched by substring of
#: torch.cuda.get_device_name(), first match wins (so "H100 PCIe" precedes "H100").
GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756e12, 51.2e12),
    ("H100", 989e12, 66.9e12),
    ("H200", 989e12, 66.9e12),
    ("A100", 312e12, 19.5e12),
    ("L40S", 362e12, 91.6e12),
    ("L4", 121e12, 30.3e12),
    ("A10", 125e12, 31.2e12),
    ("RTX 4090", 165e12, 82.6e12),
    ("V100", 125e12, 15.7e12),
    ("T4", 65e12, 8.1e12),
)


def gpu_peak(device_name: str, half_precision: bool) -> float | None:
    """The datasheet peak of a GPU by name, or None for one not in the table."""
    for key, half, fp32 in GPU_PEAKS:
        if key.lower() in device_name.lower():
            return half if half_precision else fp32
    return None


def measure_matmul_ceiling(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` fp32 (size × size) matmuls on the CPU at torch's thread count
    (about 0.1–0.5 s on a laptop core)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: first-call allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def mfu(flops: float, seconds: float, peak: float) -> float:
    return flops / (seconds * peak) if seconds > 0 and peak > 0 else 0.0


class PPOShapes(NamedTuple):
    policy: ModelShape  # the reference has the same shape (the initial policy, or the policy without adapters)
    critic: ModelShape | None  # None: `value_head: shared`, a scalar head on the policy's trunk
    rewards: tuple[ModelShape, ...]  # reward-model members; empty for a callable reward


def ppo_phase_flops(shapes: PPOShapes, query_lengths: torch.Tensor, response_lengths: torch.Tensor,
                    epochs: int) -> dict[str, float]:
    """FLOPs of one PPO iteration's phases over rows of these real prompt / response lengths:
    generation (one policy forward), experience (policy, reference, critic and reward forwards),
    and the update's policy and critic parts (`epochs` passes of forward + backward)."""
    n = query_lengths + response_lengths
    policy = forward_flops(shapes.policy, n, response_lengths)
    critic = forward_flops(shapes.critic, n, None) if shapes.critic is not None else 0.0
    rewards = sum(forward_flops(shape, n, None) for shape in shapes.rewards)
    return {"generation": policy, "experience": 2 * policy + critic + rewards,
            "policy_update": epochs * training_flops(policy), "critic_update": epochs * training_flops(critic)}
