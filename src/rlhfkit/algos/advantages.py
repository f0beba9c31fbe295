"""Per-token PPO rewards and Generalized Advantage Estimation.

Shapes: (B, T) over response tokens, ``scores`` (B,). ``response_mask`` is 1/True on
the valid response tokens, EOS included, and 0 on padding.

``token_level_rewards``: r_t = -beta * kl_t on every valid token, plus the reward-model
score at the last valid token (the EOS index), as in Ziegler 2019 and N+ (Huang et al.
2024, items 11 and 17). Departures:
- TRL's PPO trainer adds the score at the first *padding* index after the response (its
  index is the sequence length, one past EOS). We add it to the last response token
  itself, where the RM read it and where the value head still has a value.
- A row whose mask is all zero (an empty response) gets no score and all-zero rewards.
- The last valid token is the largest masked index, so this works for any mask.

``compute_gae`` (Schulman et al. 2016), the ``lastgaelam`` loop of openai/baselines and
summarize_from_feedback_details:
    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},
    returns_t = A_t + V_t.
The episode ends at the last valid token, so V after it is 0 (no bootstrap). Values and
rewards at masked positions are read as 0 (NaN/inf there cannot leak), and advantages
and returns are zeroed outside the mask. This relies on the valid tokens of each row
being one contiguous run, normally a prefix (right padding); leading zeros are also
fine because the recursion runs backwards. A mask with holes raises ValueError instead
of silently bootstrapping across the hole. Callers pass detached values.
"""

from __future__ import annotations

import torch

__all__ = ["token_level_rewards", "compute_gae"]


def _last_valid_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) index of the last set position per row, and (B,) whether the row has any."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=1)
    has_any = last >= 0
    return last.clamp(min=0), has_any


def token_level_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    kl_coef: float,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """(B, T) rewards: -kl_coef * kl on valid tokens, + scores[b] at row b's last valid token."""
    if kl.dim() != 2 or response_mask.shape != kl.shape or scores.shape != kl.shape[:1]:
        raise ValueError(
            f"expected kl (B, T), response_mask (B, T), scores (B,); got {tuple(kl.shape)}, "
            f"{tuple(response_mask.shape)}, {tuple(scores.shape)}"
        )
    mask = response_mask.bool()
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    rewards = torch.where(mask, -kl_coef * kl, zero)
    last, has_any = _last_valid_index(mask)
    score = torch.where(has_any, scores.to(rewards.dtype), zero)
    # Out-of-place scatter so the function stays differentiable in scores and kl.
    placed = torch.zeros_like(rewards).scatter(1, last.unsqueeze(1), score.unsqueeze(1))
    return rewards + placed


def _check_contiguous(mask: torch.Tensor) -> None:
    # A run starts wherever the mask goes 0 -> 1 (or is 1 at t = 0); one run per row at most.
    starts = mask[:, 0].long() + (mask[:, 1:] & ~mask[:, :-1]).sum(dim=1)
    if bool((starts > 1).any()):
        raise ValueError("response_mask must have one contiguous run of valid tokens per row (right padding)")


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lam) over (B, T) ``rewards`` and ``values``; returns (advantages, returns), (B, T)."""
    if rewards.shape != values.shape or response_mask.shape != values.shape or values.dim() != 2:
        raise ValueError(
            f"expected rewards, values, response_mask all (B, T); got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(response_mask.shape)}"
        )
    mask = response_mask.bool()
    _check_contiguous(mask)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    values = torch.where(mask, values, zero)
    rewards = torch.where(mask, rewards.to(values.dtype), zero)

    T = values.shape[1]
    next_value = torch.zeros_like(values[:, 0])  # V after the final position: 0
    last_gae = torch.zeros_like(values[:, 0])
    reversed_advantages = []
    for t in reversed(range(T)):
        # Padding after the last valid token has V = r = 0, so it contributes delta = 0
        # and the valid token before it sees V_{t+1} = 0 and A_{t+1} = 0: no bootstrap.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        reversed_advantages.append(last_gae)
        next_value = values[:, t]
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = advantages + values
    return torch.where(mask, advantages, zero), torch.where(mask, returns, zero)
