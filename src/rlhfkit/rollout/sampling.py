"""Temperature sampling for Hugging Face `generate` by inverse CDF, instead of `torch.multinomial`.

Why: on CPU `torch.multinomial(probs, 1)` costs far more than the small models' forward. Profiled
on the default preset's policy shape (GPT-2 4 layers, d=128, vocabulary 4096; 128 rows × 24 new
tokens, 2 threads), multinomial and the exponential draws inside it took 70 % of `generate`'s time.
Inverse-CDF sampling needs one uniform draw per row instead of one random number per vocabulary
entry: a cumulative sum and a binary search (bench/generation.py measures the effect).

How: `generate(do_sample=False, logits_processor=[InverseCDFSampler(T)])`. The processor runs
after generate's own processors (min_new_tokens, …). It draws each row's token from
softmax(scores / T) and returns scores that are 0 at the drawn token and −inf elsewhere, so the
greedy argmax that follows emits exactly that token. The distribution is that of
`do_sample=True` with temperature only (top-k off, top-p 1), the one rlhfkit's logprobs assume
(N+ detail 16). The random stream differs: a seed gives other samples than `torch.multinomial`'s.
Top-k / top-p keep generate's own sampler (`generate_kwargs`).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def inverse_cdf_pick(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(B,) token ids: row b takes the first id whose cumulative probability exceeds u_b × total.

    `probs` (B, V) are non-negative (not necessarily normalised), `uniforms` (B,) in [0, 1). A
    token of probability 0 spans an empty interval and is never picked. The cumulative sum is in
    float64, so rounding does not shift mass between neighbouring tokens. A draw that rounds up to
    the total falls back to the last token of positive probability."""
    cdf = probs.double().cumsum(-1)
    total = cdf[:, -1:].contiguous()
    picked = torch.searchsorted(cdf, uniforms.double().unsqueeze(-1) * total, right=True)
    last_positive = torch.searchsorted(cdf, total)  # the first position reaching the total
    return torch.minimum(picked, last_positive).squeeze(-1)


def sample_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,) ids sampled from softmax(logits / temperature), logits (B, V)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    uniforms = torch.rand(logits.shape[0], device=logits.device)  # the global RNG, as multinomial used
    return inverse_cdf_pick(probs, uniforms)


class InverseCDFSampler(LogitsProcessor):
    """A logits processor that samples: 0 at the drawn token, −inf elsewhere (see the module doc)."""

    def __init__(self, temperature: float):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        drawn = sample_from_logits(scores, self.temperature)
        return torch.full_like(scores, -torch.inf).scatter_(1, drawn.unsqueeze(1), 0.0)


def generate_kwargs(temperature: float, top_k: int | None, top_p: float | None) -> dict:
    """Arguments for `model.generate` / `GenerationConfig` that sample at `temperature`: the
    inverse-CDF sampler for temperature-only sampling, generate's own sampler with top-k / top-p."""
    if (top_k or 0) == 0 and (top_p is None or top_p >= 1.0):
        return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None,
                "logits_processor": [InverseCDFSampler(temperature)]}
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}
