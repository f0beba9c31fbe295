"""From sampled responses to everything PPO learns from: logprobs, KL, rewards, advantages.

Steps (each one call, shapes in rollout/types.py):
1. policy logprobs and entropy, reference logprobs — forward passes with logits divided by the
   sampling temperature (N+ detail 16); values V(s_t) from the critic, or, with a
   `SharedValueHead`, from the policy's own last hidden state in the same forward pass;
2. one score per response from the reward source, read at the response's EOS, and an optional
   penalty for responses that never emitted EOS (N+ detail 15);
3. per-token KL to the reference with the chosen estimator; rewards r_t = −β·KL_t, plus the
   score on the last response token (Ziegler 2019, Stiennon 2020);
4. optional reward whitening (no mean shift), GAE(γ, λ), masked advantage whitening.

Forward passes run in chunks of `chunk_size` episodes, the same size the update uses, so the
first PPO mini-batch reproduces these logprobs bit for bit (ratio exactly 1, N+ detail 6).
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.algos.advantages import compute_gae, token_level_rewards
from rlhfkit.algos.kl import kl_per_token
from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.algos.masked import masked_mean, masked_whiten
from rlhfkit.models.scoring import position_ids_from_mask
from rlhfkit.models.value_head import SharedValueHead
from rlhfkit.rollout.types import Rollout


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """(B, Tr, V) logits that predict each response token (positions Tq−1 … Tq+Tr−2)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)).logits
    return logits[:, query_length - 1 : -1]


def policy_logprobs(
    model: nn.Module, rollout: Rollout, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, Tr) log π(a_t|s_t) under softmax(logits / T), and optionally the entropy."""
    logits = response_logits(model, rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1])
    logprobs = logprobs_from_logits(logits, rollout.response_ids, temperature)
    entropy = entropy_from_logits(logits, temperature) if with_entropy else None
    return logprobs, entropy


def policy_logprobs_and_values(
    model: nn.Module, head: SharedValueHead, rollout: Rollout, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, Tr) logprobs, entropy and values V(s_t) from one policy forward pass (shared value head).

    The head reads `hidden_states[-1]` at the positions whose logits predict the response tokens,
    the same positions `token_values` uses; the logits are those `policy_logprobs` computes.
    """
    ids, mask, start = rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1] - 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), output_hidden_states=True)
    logits = out.logits[:, start:-1]
    logprobs = logprobs_from_logits(logits, rollout.response_ids, temperature)
    values = head(out.hidden_states[-1][:, start:-1]).float()
    return logprobs, entropy_from_logits(logits, temperature), values


def token_values(value_model: nn.Module, rollout: Rollout) -> torch.Tensor:
    """(B, Tr) V(s_t): the critic's scalar head applied at every position, not only the last.

    Works for Hugging Face `*ForSequenceClassification` models, whose backbone sits under
    `base_model_prefix` and whose head is `score`.
    """
    ids, mask = rollout.input_ids, rollout.attention_mask
    backbone = getattr(value_model, value_model.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).last_hidden_state
    values = value_model.score(hidden).squeeze(-1)
    return values[:, rollout.query_ids.shape[1] - 1 : -1].float()


@torch.no_grad()
def forward_rollout(
    rollout: Rollout, policy: nn.Module, reference: nn.Module, value_model: nn.Module, temperature: float, chunk_size: int
) -> None:
    """Fill logprobs, ref_logprobs, entropy and values, `chunk_size` episodes at a time.

    `value_model` is a critic model, or a `SharedValueHead` read off the policy's forward pass.
    """
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "entropy": [], "ref_logprobs": [], "values": []}
    for start in range(0, rollout.batch_size, chunk_size):
        chunk = rollout.select(torch.arange(start, min(start + chunk_size, rollout.batch_size)))
        if isinstance(value_model, SharedValueHead):
            logprobs, entropy, values = policy_logprobs_and_values(policy, value_model, chunk, temperature)
        else:
            logprobs, entropy = policy_logprobs(policy, chunk, temperature, with_entropy=True)
            values = token_values(value_model, chunk)
        ref_logprobs, _ = policy_logprobs(reference, chunk, temperature)
        parts["logprobs"].append(logprobs)
        parts["entropy"].append(entropy)
        parts["ref_logprobs"].append(ref_logprobs)
        parts["values"].append(values)
    for name, tensors in parts.items():
        setattr(rollout, name, torch.cat(tensors))


def compute_rewards_and_advantages(
    rollout: Rollout,
    *,
    kl_coef: float,
    kl_estimator: str,
    gamma: float,
    lam: float,
    whiten_rewards: bool,
    whiten_advantages: bool,
) -> None:
    """Fill kl, rewards, advantages and returns from logprobs, values and scores."""
    mask = rollout.response_mask.float()
    rollout.kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, kl_estimator) * mask
    rewards = token_level_rewards(rollout.scores, rollout.kl, kl_coef, mask)
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
    rollout.rewards = rewards
    advantages, returns = compute_gae(rewards, rollout.values * mask, mask, gamma, lam)
    if whiten_advantages:
        advantages = masked_whiten(advantages, mask) * mask
    rollout.advantages, rollout.returns = advantages, returns


def rollout_stats(rollout: Rollout, kl_coef: float) -> dict[str, float]:
    """Per-iteration objective and rollout metrics (TRL's names where they exist)."""
    mask = rollout.response_mask.float()
    seq_kl = (rollout.kl * mask).sum(1)
    non_score = -kl_coef * seq_kl
    lengths = mask.sum(1)
    return {
        "objective/kl": float(seq_kl.mean()),
        "objective/entropy": float((rollout.entropy * mask).sum(1).mean()),
        "objective/scores": float(rollout.scores.mean()),
        "objective/scores_std": float(rollout.scores.std()) if rollout.batch_size > 1 else 0.0,
        "objective/non_score_reward": float(non_score.mean()),
        "objective/rlhf_reward": float((rollout.scores + non_score).mean()),
        "policy/entropy_avg": float(masked_mean(rollout.entropy, mask)),
        "rollout/response_length": float(lengths.mean()),
        "rollout/eos_fraction": float(rollout.ended_with_eos.float().mean()),
        "value/mean": float(masked_mean(rollout.values, mask)),
        "value/advantage_std": float(rollout.advantages[mask.bool()].std()) if mask.sum() > 1 else 0.0,
    }
