"""FLOPs of one PPO iteration of bench/compare_trl.py, per phase and per side (matmuls only).

A GPT-2 block holds 12·d² weights (q, k, v, out: 4·d²; MLP d→4d→d: 8·d²), so a token costs
2·12·d² FLOPs per layer through them, plus attention: q·kᵀ and weights·v over T keys, 2·2·T·d
per token per layer — counted over the full T×T matrix, which is what the masked attention
computes. The LM head costs 2·d·V per token; a score head (critic, RM) 2·d, negligible.
Backward = 2 × forward, so a training step is 3 × forward. Layer norms, softmax, GELU, the
optimiser and the PPO maths are left out (a few % at these sizes).

Generation with the KV cache: the prompt in one forward (Tq tokens, T = Tq keys), then R − 1
single-token steps over a growing cache. The experience forwards read T = Tq + R tokens:
rlhfkit runs policy, reference, critic and RM; TRL runs reference, critic and RM and takes the
old logprobs from generate's logits. The update is the same on both sides: `epochs` × (policy +
critic) forward + backward over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    layers: int
    width: int
    vocab: int


def forward_flops(m: ModelShape, tokens: int, keys: int, lm_head: bool) -> float:
    """One forward of `tokens` tokens that each attend over `keys` positions."""
    d = m.width
    per_token = m.layers * (2 * 12 * d * d + 2 * 2 * keys * d) + (2 * d * m.vocab if lm_head else 2 * d)
    return float(tokens * per_token)


def generation_flops(m: ModelShape, batch: int, prompt: int, response: int) -> float:
    prefill = forward_flops(m, prompt, prompt, lm_head=True)
    decode = sum(forward_flops(m, 1, prompt + t, lm_head=True) for t in range(1, response))
    return batch * (prefill + decode)


def iteration_flops(m: ModelShape, batch: int, prompt: int, response: int, epochs: int) -> dict[str, dict[str, float]]:
    """{"rlhfkit"|"trl": {"generation", "experience", "update", "total"}} FLOPs per iteration."""
    seq = prompt + response
    lm = batch * forward_flops(m, seq, seq, lm_head=True)  # policy or reference
    scalar = batch * forward_flops(m, seq, seq, lm_head=False)  # critic or RM
    generation = generation_flops(m, batch, prompt, response)
    update = epochs * 3 * (lm + scalar)
    sides = {"rlhfkit": {"generation": generation, "experience": 2 * lm + 2 * scalar, "update": update},
             "trl": {"generation": generation, "experience": lm + 2 * scalar, "update": update}}
    for phases in sides.values():
        phases["total"] = sum(phases.values())
    return sides
