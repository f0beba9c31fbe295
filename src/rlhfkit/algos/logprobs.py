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

``logprobs_and_entropy`` gives both in one chunked pass with a hand-written
backward, for the PPO forwards (see the comment above it); the two functions
above stay the definitions it is tested against.

``labels`` must be valid token ids: replace ``ignore_index`` positions (e.g.
-100) by any valid id and mask the result, as rlhfkit's callers do.
"""

from __future__ import annotations

import torch

__all__ = ["logprobs_from_logits", "entropy_from_logits", "logprobs_and_entropy"]


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


# ------------------------------------------------------------------------- fused, for the PPO forwards
#
# PPO's forwards need, per response token, log pi(a_t) and the entropy of pi(.|s_t) under the same
# temperature. The two functions above, called one after the other, each divide the (N, V) logits by
# T, each run a logsumexp over them, and their autograd backward adds a softmax, a zero-filled
# gather gradient and a division: about a dozen full passes over an (N, V) tensor that does not fit
# in cache. On the benchmark's smallest PPO shape (bench/profile_ppo.py, 2 layers, d = 128, V = 4096)
# those passes were ~40 % of the update's CPU time, more than every matmul together.
# `logprobs_and_entropy` computes both in one pass per chunk of rows (a chunk's working set stays in
# cache), keeps only the logits and the (N,) logsumexp for its backward, and writes the gradient
# with respect to the logits in one pass per chunk, from the closed forms
#     d log p_y / d z_j = 1[j = y] − p_j,      d H / d z_j = −p_j (log p_j + H),     z = logits / T.

# Elements per chunk. CPU: 1 MiB of fp32, cache-sized (2^16 … 2^22 timed alike on the default
# vocabulary; one (N, V) chunk, 2^30, was 2× slower). Accelerators: 64 MiB, since every chunk costs
# about ten kernel launches and bandwidth, not cache, is what they are short of.
_CHUNK_ELEMENTS = 1 << 18
_CHUNK_ELEMENTS_ACCELERATOR = 1 << 24


def _chunks(rows: int, vocab: int, device: torch.device):
    budget = _CHUNK_ELEMENTS if device.type == "cpu" else _CHUNK_ELEMENTS_ACCELERATOR
    step = max(1, budget // max(vocab, 1))
    return ((s, min(s + step, rows)) for s in range(0, rows, step))


class _LogprobsAndEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, temperature: float, entropy_grad: bool):
        flat, index = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1, 1).long()
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        n = flat.shape[0]
        logp, lse, entropy = (torch.empty(n, dtype=dtype, device=logits.device) for _ in range(3))
        for s, e in _chunks(n, flat.shape[1], logits.device):
            z = flat[s:e].to(dtype).div(temperature)  # a new tensor; upcast first (bf16 would round again)
            lse[s:e] = torch.logsumexp(z, dim=-1)
            logp[s:e] = z.gather(1, index[s:e]).squeeze(1) - lse[s:e]
            log_q = _log_softmax_(z, lse[s:e])
            entropy[s:e] = -(log_q.exp() * log_q).sum(-1)
        ctx.save_for_backward(logits, index, lse, entropy)
        ctx.temperature, ctx.entropy_grad = temperature, entropy_grad
        logp, entropy = logp.view(labels.shape), entropy.view(labels.shape)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, grad_entropy: torch.Tensor | None):
        logits, index, lse, entropy = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        g_lp = grad_logp.reshape(-1, 1).to(lse.dtype)
        g_h = grad_entropy.reshape(-1, 1).to(lse.dtype) if ctx.entropy_grad and grad_entropy is not None else None
        grad = torch.empty_like(flat)
        for s, e in _chunks(flat.shape[0], flat.shape[1], logits.device):
            log_q = _log_softmax_(flat[s:e].to(lse.dtype).div(ctx.temperature), lse[s:e])
            q = log_q.exp()
            if g_h is not None:  # − g_H · p (log p + H), then the log-prob term below
                dz = log_q.add_(entropy[s:e, None]).mul_(q).mul_(-g_h[s:e]).sub_(q * g_lp[s:e])
            else:
                dz = q.mul_(-g_lp[s:e])
            dz.scatter_add_(1, index[s:e], g_lp[s:e])
            if grad.dtype == dz.dtype:
                torch.div(dz, ctx.temperature, out=grad[s:e])  # straight into the gradient, no copy
            else:  # low-precision logits: their gradient in their dtype
                grad[s:e] = dz.div_(ctx.temperature)
        return grad.view_as(logits), None, None, None


def _log_softmax_(z: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """log softmax of a chunk of scaled logits given its logsumexp, in place; −inf (a filtered token)
    is clamped to the dtype's lowest finite value, so p·log p is 0·(−big) = 0, not 0·(−inf) = NaN."""
    return z.sub_(lse[:, None]).clamp_(min=torch.finfo(z.dtype).min)


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                         entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(labels), H(pi)), each (B, T), under softmax(logits / temperature) — the values of
    `logprobs_from_logits` and `entropy_from_logits`, in one chunked pass with a hand-written backward.
    `entropy_grad=False`: the entropy is a statistic only (no gradient flows through it). Outputs
    float32 (float64 for float64 logits), computed in that precision whatever the logits' dtype."""
    _check_temperature(temperature)
    return _LogprobsAndEntropy.apply(logits, labels, temperature, entropy_grad)
