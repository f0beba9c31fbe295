"""Per-token log-probabilities and entropies from language-model logits.

Shapes: ``logits`` (B, T, V), ``labels`` (B, T) integer token ids; both
functions return (B, T).

``logprobs_from_logits`` computes log softmax(logits / temperature)[label].
Dividing by the sampling temperature *before* the softmax matters: rollout
logprobs come from the temperature-scaled sampling distribution, so the
policy and reference logprobs used for the PPO ratio and the KL penalty must
be scaled the same way (N+ implementation details, Huang et al. 2024,
item 16: leaving it out makes the KL rise too fast).

Memory: a full log_softmax materialises a second (B, T, V) tensor. For
float32/float64 logits we use the identity
``log p(y) = z_y - logsumexp(z)``, which only keeps (B, T) outputs. For
half/bfloat16 logits that identity loses too much precision, so we go row by
row in float32 (peak extra memory: one (T, V) float32 row). Outputs are
float32 (or float64 for float64 input) in both cases, because ratios and KL
built from bfloat16 logprobs are too coarse.

``labels`` must be valid token ids: replace ``ignore_index`` positions (e.g.
-100) by any valid id and mask the result, as rlhfkit's callers do.
"""

from __future__ import annotations

import torch

__all__ = ["logprobs_from_logits", "entropy_from_logits"]


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


def _is_full_precision(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float32, torch.float64)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) log pi(labels) under softmax(logits / temperature); logits (B, T, V)."""
    _check_temperature(temperature)
    index = labels.long().unsqueeze(-1)
    if _is_full_precision(logits):
        logits = _scale(logits, temperature)
        picked = logits.gather(-1, index).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_index in zip(logits, index):  # one (T, V) row at a time
        # Upcast before dividing by the temperature: a bf16 division rounds again.
        row_logp = torch.log_softmax(_scale(row_logits.float(), temperature), dim=-1)
        rows.append(row_logp.gather(-1, row_index).squeeze(-1))
    return torch.stack(rows) if rows else labels.new_zeros(labels.shape, dtype=torch.float32)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) entropy H = -sum_v p_v log p_v of softmax(logits / temperature).

    Uses H = logsumexp(z) - sum_v p_v z_v, which avoids log(0) when some
    probabilities underflow. Logits of -inf (a filtered vocabulary) have
    p_v = 0 and contribute 0 rather than 0 * -inf = NaN. Computed in float32
    for low-precision input.
    """
    _check_temperature(temperature)
    z = _scale(logits if _is_full_precision(logits) else logits.float(), temperature)
    probs = torch.softmax(z, dim=-1)
    z_finite = z.masked_fill(z == float("-inf"), 0.0)
    return torch.logsumexp(z, dim=-1) - (probs * z_finite).sum(dim=-1)
