"""PPO's per-iteration throughput figures: model FLOPs per phase, MFU and tokens per second.

The FLOP counts are training/flops.py's; this module gathers the shapes of the models a PPO
iteration ran, sums the counts over processes (one all-reduce) and divides by the phase times
and the peak (`peak_flops`: ppo.logging.peak_flops, a GPU's datasheet figure, or the CPU's
matmul ceiling measured once).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhfkit.memory.shapes import shape_from_hf_config
from rlhfkit.metric_names import M
from rlhfkit.training.flops import PPOShapes, gpu_peak, measure_matmul_ceiling, mfu, ppo_phase_flops


def peak_flops(configured: float | None, device: torch.device, half_precision: bool) -> float | None:
    """Peak FLOP/s of one device: the configured value, a GPU's datasheet figure (None for a GPU not
    in the table), or the CPU's measured matmul ceiling."""
    if configured:
        return configured
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), half_precision)
    return measure_matmul_ceiling() if device.type == "cpu" else None


def ppo_shapes(policy, critic, reward_models: list) -> PPOShapes:
    """The shapes of the policy (the reference has its shape), the critic (None for a value head on
    the policy) and each reward model (empty for a callable reward)."""
    return PPOShapes(shape_from_hf_config(policy.config),
                     shape_from_hf_config(critic.config) if critic is not None else None,
                     tuple(shape_from_hf_config(model.config) for model in reward_models))


def iteration_figures(shapes: PPOShapes, query_lengths: torch.Tensor, response_lengths: torch.Tensor, epochs: float,
                      seconds: tuple[float, float, float], peak: float | None, world_size: int,
                      all_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """perf/ FLOP counts and timing/ rates of one iteration; `seconds`: (generation, scoring +
    experience, update); the lengths are this process's rows, `all_sum` adds every process's."""
    local = ppo_phase_flops(shapes, query_lengths, response_lengths, int(epochs))
    real = float((query_lengths + response_lengths).sum())
    totals = all_sum(torch.tensor([*local.values(), real], dtype=torch.float64, device=query_lengths.device)).tolist()
    flops, real_tokens = dict(zip(local, totals)), totals[-1]
    generation, experience, update = seconds
    figures = {
        M.GENERATION_TFLOP: flops["generation"] / 1e12, M.EXPERIENCE_TFLOP: flops["experience"] / 1e12,
        M.POLICY_UPDATE_TFLOP: flops["policy_update"] / 1e12, M.CRITIC_UPDATE_TFLOP: flops["critic_update"] / 1e12,
        M.EXPERIENCE_TOKENS_PER_SECOND: real_tokens / max(experience, 1e-9),
        M.UPDATE_TOKENS_PER_SECOND: real_tokens * epochs / max(update, 1e-9),
    }
    if peak:  # an unknown GPU: no peak, no MFU
        total_peak = peak * world_size
        figures.update({
            M.PEAK_FLOPS: peak,
            M.GENERATION_MFU: mfu(flops["generation"], generation, total_peak),
            M.EXPERIENCE_MFU: mfu(flops["experience"], experience, total_peak),
            M.UPDATE_MFU: mfu(flops["policy_update"] + flops["critic_update"], update, total_peak),
        })
    return figures
