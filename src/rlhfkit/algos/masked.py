"""Masked reductions and whitening over padded token tensors.

Every RLHF tensor of shape (B, T) carries padding, so its statistics must be
taken over the valid positions only. ``mask`` is always 0/1 (int or float) or
bool and has the same shape as ``x``; it is read as a boolean, so fractional
weights are not supported.

Whitening follows the N+ implementation details (Huang et al. 2024, item 20)
and the HF "N implementation details" blog: ``(x - mean) / sqrt(var + eps)``
with the mean and *biased* variance taken over the masked elements, and the
mean added back when ``shift_mean=False`` (used for reward whitening).

Where we depart from the sources:
- Padded positions are excluded with ``torch.where`` rather than ``x * mask``,
  so a NaN/inf sitting in padding (e.g. a placeholder logprob) cannot leak
  into the statistic (``nan * 0`` is still nan).
- An all-zero mask gives mean 0 and variance 0 instead of NaN or an error
  (TRL raises); with ``unbiased=True`` and a single element the variance is 0,
  not inf.
- ``masked_whiten`` returns whitened values at *every* position, padding
  included; callers zero the padding themselves if they need it.
- ``masked_whiten(..., all_sum=f)`` takes its statistics over a batch split across
  processes: ``f`` sums a tensor over every process (an all-reduce; the caller supplies
  it, so this module stays free of torch.distributed). The identity — the default — is
  the one-process case. Sums, not means, travel: shards of different sizes still give
  the statistics of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["masked_sum", "masked_mean", "masked_var", "masked_whiten"]


def _check(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != x shape {tuple(x.shape)}")
    return mask.bool()


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is set; over all dims if ``dim`` is None."""
    m = _check(x, mask)
    kept = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` over masked positions. An empty mask (along ``dim``) gives 0, not NaN."""
    m = _check(x, mask)
    total = masked_sum(x, m, dim)
    count = m.sum() if dim is None else m.sum(dim)
    # clamp: an empty selection has sum 0, so 0 / 1 = 0 is returned instead of 0 / 0.
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Variance of ``x`` over all masked positions (a scalar tensor).

    Biased (divide by n) by default, as in the N+ / HF whitening; ``unbiased``
    divides by n - 1 (Bessel), clamped so n <= 1 gives 0.
    """
    m = _check(x, mask)
    mean = masked_mean(x, m)
    sq = masked_sum((x - mean) ** 2, m)
    n = m.sum().to(sq.dtype)
    denom = (n - 1) if unbiased else n
    return sq / denom.clamp(min=1)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    unbiased: bool = False,
    eps: float = 1e-8,
    all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(x - mean) * rsqrt(var + eps)``, statistics over the masked elements.

    With ``shift_mean=False`` the mean is added back, so only the scale
    changes (the N+ reward-whitening default). Shape of the output = shape of
    ``x``; padded positions hold whitened garbage and must be zeroed by the
    caller if it matters. ``all_sum``: statistics over every process's shard
    (module docstring).
    """
    m = _check(x, mask)
    if all_sum is None:
        mean = masked_mean(x, m)
        var = masked_var(x, m, unbiased=unbiased)
    else:
        total_and_count = all_sum(torch.stack([masked_sum(x, m), m.sum().to(x.dtype)]))
        n = total_and_count[1]
        mean = total_and_count[0] / n.clamp(min=1)
        sq = all_sum(masked_sum((x - mean) ** 2, m))
        var = sq / ((n - 1) if unbiased else n).clamp(min=1)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened
