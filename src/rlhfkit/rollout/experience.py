"""From a Rollout and its scores to the Experience PPO learns from — one function, one record.

`make_experience` (no gradients):
1. old logprobs, entropy and values V(s_t) from the actor-critic's forward, reference logprobs from
   the frozen reference — all with logits divided by the sampling temperature (N+ detail 16);
2. per-token KL to the reference with the chosen estimator; rewards r_t = −β·KL_t, plus the score
   on the last response token (Ziegler 2019, Stiennon 2020);
3. optional reward whitening (no mean shift), GAE(γ, λ), masked advantage whitening.

Step 1 needs the models; steps 2–3 are the pure function `rewards_and_advantages`.
Forward passes run over the micro-batches the caller gives: with a fixed row count, consecutive
chunks of the mini-batch size the update uses (every chunk the same padded shape); with a token
budget, exactly the micro-batches of the update's first epoch (training/micro_batches.py), packed
the same way. Either way the first PPO micro-batch reproduces these logprobs bit for bit (ratio
exactly 1, N+ detail 6). The per-token outputs are 0 on padding.

Data-parallel runs: each process holds its share of the batch. Whitening statistics are taken
over the whole batch through `all_sum` (a sum over processes; identity in one process), and so
are the logged statistics (`experience_stats`), so no figure depends on how the batch was split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from rlhfkit.algos.advantages import compute_gae, token_level_rewards
from rlhfkit.algos.kl import kl_per_token
from rlhfkit.algos.masked import masked_whiten
from rlhfkit.metric_names import M
from rlhfkit.models.actor_critic import response_logprobs
from rlhfkit.models.response_slots import ResponseSlots, packed_rows
from rlhfkit.rollout.types import Experience, Rollout

AllSum = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class AdvantageSettings:
    kl_coef: float  # β for this iteration
    kl_estimator: str
    gamma: float
    lam: float
    whiten_rewards: bool
    whiten_advantages: bool


@torch.no_grad()
def make_experience(rollout: Rollout, scores: torch.Tensor, actor_critic: nn.Module, reference: nn.Module,
                    settings: AdvantageSettings, temperature: float, micro_batches: list[torch.Tensor],
                    packed: bool = False, all_sum: AllSum = _identity) -> Experience:
    """The Experience of `rollout`: forwards over `micro_batches` (row indices, each row once), then
    KL, rewards and GAE. With `packed` each micro-batch is one sequence of its real tokens."""
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "entropy": [], "values": [], "ref_logprobs": []}
    for rows in micro_batches:
        ids, mask, response = model_inputs(rollout.select(rows), packed)
        out = actor_critic(ids, mask, response, temperature)
        ref = response_logprobs(reference, ids, mask, response, temperature)
        for name, t in (*zip(("logprobs", "entropy", "values"), out), ("ref_logprobs", ref)):
            parts[name].append(t)
    inverse = torch.argsort(torch.cat(micro_batches).to(rollout.response_ids.device))
    forwards = {name: (torch.cat(tensors)[inverse] * rollout.response_mask) for name, tensors in parts.items()}
    kl, rewards, advantages, returns = rewards_and_advantages(
        forwards["logprobs"], forwards["ref_logprobs"], forwards["values"], scores, rollout.response_mask, settings, all_sum)
    generated = {f.name: getattr(rollout, f.name) for f in fields(Rollout)}
    return Experience(**generated, **forwards, scores=scores, kl=kl, rewards=rewards,
                      advantages=advantages, returns=returns)


def contiguous_chunks(batch_size: int, chunk_size: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Row indices 0…B−1 in consecutive chunks of `chunk_size`: the fixed-row-count forwards."""
    return list(torch.arange(batch_size, device=device).split(chunk_size))


def model_inputs(mb: Rollout, packed: bool) -> tuple[torch.Tensor, torch.Tensor | None, int | ResponseSlots]:
    """(input_ids, attention_mask, response) of a micro-batch: the padded rows as sampled, or
    packed into one sequence of its real tokens (models/response_slots.py), with no mask."""
    if not packed:
        return mb.input_ids, mb.attention_mask, mb.query_ids.shape[1]
    ids, slots = packed_rows(mb.query_ids, mb.query_mask, mb.response_ids, mb.response_mask)
    return ids, None, slots


def rewards_and_advantages(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, values: torch.Tensor, scores: torch.Tensor,
                           response_mask: torch.Tensor, settings: AdvantageSettings,
                           all_sum: AllSum = _identity) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kl, rewards, advantages, returns), each (B, Tr) and 0 after the response's last valid token."""
    mask = response_mask.float()
    kl = kl_per_token(logprobs, ref_logprobs, settings.kl_estimator) * mask
    rewards = token_level_rewards(scores, kl, settings.kl_coef, mask)
    if settings.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False, all_sum=all_sum) * mask
    advantages, returns = compute_gae(rewards, values * mask, mask, settings.gamma, settings.lam)
    if settings.whiten_advantages:
        advantages = masked_whiten(advantages, mask, all_sum=all_sum) * mask
    return kl, rewards, advantages, returns


def experience_stats(exp: Experience, kl_coef: float, all_sum: AllSum = _identity) -> dict[str, float]:
    """Per-iteration objective and rollout metrics over the whole batch (every process's share).

    Per-sequence figures are means over episodes, per-token ones over valid tokens; sums travel
    between processes in one tensor and one host sync ends the function."""
    mask = exp.response_mask.float()
    seq_kl = exp.kl.sum(1)
    non_score = -kl_coef * seq_kl
    lengths = mask.sum(1)
    valid = mask.bool()
    values, returns = exp.values[valid], exp.returns[valid]
    advantages = exp.advantages[valid]
    sums = all_sum(torch.stack([
        torch.tensor(float(exp.batch_size), device=mask.device),  # 0 episodes
        seq_kl.sum(), (exp.entropy * mask).sum(), exp.scores.sum(), exp.scores.square().sum(),  # 1-4
        non_score.sum(), lengths.sum(), exp.ended_with_eos.float().sum(),  # 5-7
        values.sum(), advantages.sum(), advantages.square().sum(),  # 8-10
        returns.sum(), returns.square().sum(), (returns - values).sum(), (returns - values).square().sum(),  # 11-14
    ]).double()).tolist()
    n, tokens = sums[0], max(sums[6], 1.0)

    def var(total: float, squares: float, count: float) -> float:  # population variance from sums
        return max(squares / count - (total / count) ** 2, 0.0) if count > 0 else 0.0

    var_returns = var(sums[11], sums[12], tokens)
    var_residual = var(sums[13], sums[14], tokens)
    return {
        M.KL: sums[1] / n,
        M.ENTROPY_SEQ: sums[2] / n,
        M.SCORES: sums[3] / n,
        M.SCORES_STD: (var(sums[3], sums[4], n) * n / (n - 1)) ** 0.5 if n > 1 else 0.0,  # unbiased, as torch.std
        M.NON_SCORE_REWARD: sums[5] / n,
        M.RLHF_REWARD: (sums[3] + sums[5]) / n,
        M.ENTROPY_TOKEN: sums[2] / tokens,
        M.RESPONSE_LENGTH: sums[6] / n,
        M.EOS_FRACTION: sums[7] / n,
        M.VALUE_MEAN: sums[8] / tokens,
        M.ADVANTAGE_STD: var(sums[9], sums[10], tokens) ** 0.5,
        # 1 − Var(R − V)/Var(R): how much of the return the critic predicts (1 perfect, ≤ 0 useless).
        M.EXPLAINED_VARIANCE: 1.0 - var_residual / var_returns if var_returns > 0 else 0.0,
        M.GENERATED_TOKENS: sums[6],
    }
