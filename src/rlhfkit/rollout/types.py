"""The one object a PPO iteration passes around: a batch of episodes with every per-token tensor.

B = episodes in the batch, Tq = query (prompt) length, left-padded, Tr = response length,
right-padded. A response's valid tokens are a prefix of its row: every sampled token up to and
including the first EOS (tokens after EOS are padding and carry no loss, N+ detail 14).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Rollout:
    # Filled by generation
    query_ids: torch.Tensor  # (B, Tq) long, left-padded prompt tokens
    query_mask: torch.Tensor  # (B, Tq) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, Tr) long, sampled tokens; pad after EOS
    response_mask: torch.Tensor  # (B, Tr) 1 up to and including the first EOS
    ended_with_eos: torch.Tensor  # (B,) bool: the response emitted EOS within the budget
    prompts: list[str]  # B prompt texts (as the policy saw them)
    responses: list[str]  # B response texts, special tokens removed
    # Filled by experience building (no gradients)
    logprobs: torch.Tensor | None = None  # (B, Tr) log π_old(a_t|s_t), sampling temperature applied
    ref_logprobs: torch.Tensor | None = None  # (B, Tr) log π_ref(a_t|s_t), same temperature
    entropy: torch.Tensor | None = None  # (B, Tr) H(π_old(·|s_t))
    values: torch.Tensor | None = None  # (B, Tr) V_old(s_t)
    scores: torch.Tensor | None = None  # (B,) reward-model score of the whole response
    kl: torch.Tensor | None = None  # (B, Tr) per-token KL estimate (k1/k2/k3) to the reference
    rewards: torch.Tensor | None = None  # (B, Tr) −β·kl_t, + score at the last valid token
    advantages: torch.Tensor | None = None  # (B, Tr) GAE advantages (whitened if configured)
    returns: torch.Tensor | None = None  # (B, Tr) advantages + values (value targets)

    @property
    def batch_size(self) -> int:
        return self.query_ids.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, Tq+Tr) the full sequences the models read."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, Tq+Tr) real prompt tokens + valid response tokens."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    def select(self, index: torch.Tensor) -> "Rollout":
        """The sub-batch at `index` (a mini-batch), tensors sliced, texts picked."""
        picked = {}
        idx = index.tolist()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in idx]
            else:
                picked[f.name] = value
        return Rollout(**picked)

    def to(self, device: torch.device) -> "Rollout":
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.to(device))
        return self
