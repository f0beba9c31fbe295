"""Losses for the three RLHF stages: SFT, reward model, PPO policy and value.

Each loss returns a scalar tensor that carries gradients; PPO and reward losses also
return a dict of stats computed without gradients: python floats for the reward loss,
0-dim tensors for the PPO losses (so a PPO update can sum them on the device and sync
once per iteration, not once per stat and mini-batch). Shapes: rewards (B,); PPO
tensors (B, T) with a 0/1 mask.

PPO loss aggregation: a token mean. By default over this batch's valid tokens; with
``num_tokens`` the token *sum* is divided by that count instead, so a caller can make
the optimiser step's gradient the mean over every token of the whole step, however the
step is split into micro-batches and processes (training/ppo_update.py).

- ``pairwise_loss``: Bradley-Terry -log sigma(r_c - r_r) (Stiennon 2020, InstructGPT,
  N+ item 10), with an optional per-pair margin subtracted from the difference (Llama 2)
  and label smoothing eps as in conservative DPO: the label is flipped with probability
  eps, giving -(1 - eps) log sigma(d) - eps log sigma(-d) = -log sigma(d) + eps * d.
  A per-pair soft target p = P(chosen preferred) (people's votes: ``rlhfkit label``) replaces
  the hard label 1: -[p log sigma(d) + (1 - p) log sigma(-d)], the cross-entropy of the
  Bradley-Terry probability sigma(d) against p, minimised at d = log(p / (1 - p)). Label
  smoothing flips that label too: p' = p (1 - eps) + (1 - p) eps.
  "accuracy" uses a strict r_c > r_r, so ties count as wrong (an untrained RM with
  identical outputs scores 0, not 0.5).
- ``reward_centering_loss``: mean((r_c + r_r)^2), the auxiliary centering term of
  Eisenstein et al. 2023 that pushes the RM's scores towards mean 0; the coefficient
  (0.01 in the paper) is applied by the caller.
- ``sft_loss``: next-token cross-entropy, averaged over all non-ignored tokens in the
  batch (not per sequence). An all-ignored batch gives 0, not NaN.
- ``ppo_policy_loss``: the clipped surrogate (Schulman et al. 2017) as a loss to
  minimise: max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), masked token mean.
  "clipfrac" counts tokens where the clipped term won the max, i.e. where clipping
  zeroed the gradient (TRL / N+ definition), not merely where the ratio left
  [1 - eps, 1 + eps]. "approx_kl" is the k2 estimate 0.5 * mean(logratio^2), as
  logged by N+ and TRL (CleanRL logs k3 instead).
- ``value_loss``: 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2), masked mean
  (N+ item 21). Like the policy loss it is pessimistic: it can prefer the clipped
  error even when the unclipped V is already on target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.algos.masked import masked_mean, masked_sum

__all__ = [
    "pairwise_loss",
    "reward_centering_loss",
    "sft_loss",
    "ppo_policy_loss",
    "value_loss",
]


def pairwise_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry loss over (B,) chosen/rejected rewards, optionally with (B,) soft targets
    P(chosen preferred) in [0, 1] (None: 1 for every pair); returns (loss, stats)."""
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    diff = chosen_rewards - rejected_rewards
    d = diff if margin is None else diff - margin
    p = 1.0 if target is None else target.to(d.dtype)
    p = p * (1.0 - 2.0 * label_smoothing) + label_smoothing  # = p (1 - eps) + (1 - p) eps
    # logsigmoid is the stable form of log(1 / (1 + exp(-d))).
    loss = (-p * F.logsigmoid(d) - (1.0 - p) * F.logsigmoid(-d)).mean()
    with torch.no_grad():
        stats = {
            "accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            "margin": diff.float().mean().item(),
        }
    return loss, stats


def reward_centering_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """mean((r_c + r_r)^2) over (B,) pairs; scale it by a small coefficient yourself."""
    return (chosen_rewards + rejected_rewards).square().mean()


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy: logits (B, T, V) at t predict labels (B, T) at t + 1."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
    )
    n_tokens = (shift_labels != ignore_index).sum()
    return total / n_tokens.clamp(min=1)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    num_tokens: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO surrogate over (B, T) tensors; returns (pg_loss, stats).

    ``num_tokens``: divide the masked token sum by this instead of the batch's token count."""
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    # max of the two losses = min of the two objectives: the pessimistic bound.
    pg_loss = _token_mean(torch.maximum(pg_losses, pg_losses_clipped), mask, num_tokens)
    with torch.no_grad():
        valid = mask.bool()
        clipfrac = masked_mean((pg_losses_clipped > pg_losses).float(), valid)
        approx_kl = masked_mean(0.5 * logratio.square(), valid)
        ratio_mean = masked_mean(ratio, valid)
        # An empty mask has no maximum; report 0 like the masked means do.
        ratio_max = torch.where(valid, ratio, float("-inf")).max() if valid.any() else ratio.new_zeros(())
        stats = {"clipfrac": clipfrac, "approx_kl": approx_kl, "ratio_mean": ratio_mean, "ratio_max": ratio_max}
    return pg_loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float | None,
    num_tokens: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss over (B, T) tensors; ``clip_range_value=None`` disables clipping.

    ``num_tokens``: divide the masked token sum by this instead of the batch's token count."""
    vf_losses = (values - returns).square()
    if clip_range_value is None:
        vf_loss = 0.5 * _token_mean(vf_losses, mask, num_tokens)
        return vf_loss, {"clipfrac": vf_loss.new_zeros(())}
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf_losses_clipped = (values_clipped - returns).square()
    vf_loss = 0.5 * _token_mean(torch.maximum(vf_losses, vf_losses_clipped), mask, num_tokens)
    with torch.no_grad():
        clipfrac = masked_mean((vf_losses_clipped > vf_losses).float(), mask.bool())
    return vf_loss, {"clipfrac": clipfrac}


def _token_mean(x: torch.Tensor, mask: torch.Tensor, num_tokens: torch.Tensor | float | None) -> torch.Tensor:
    """masked_mean(x, mask), or the masked sum over ``num_tokens`` (a count taken elsewhere)."""
    if num_tokens is None:
        return masked_mean(x, mask)
    return masked_sum(x, mask) / num_tokens
