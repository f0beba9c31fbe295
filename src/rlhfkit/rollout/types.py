"""The two records of a PPO iteration's data path, each built once and never changed.

`Rollout`    what generation produced: prompts and sampled responses (rollout/generation.py).
`Experience` everything PPO learns from, built from a Rollout in one function
             (rollout/experience.py::make_experience): old logprobs, reference logprobs, values,
             scores, per-token KL and rewards, advantages and returns.

B = episodes in the batch (on this process), Tq = query (prompt) length, left-padded, Tr = response
length, right-padded. A response's valid tokens are a prefix of its row: every sampled token up to
and including the first EOS (tokens after EOS are padding and carry no loss, N+ detail 14).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def _select(record, index: torch.Tensor):
    """A copy of a record holding only the episodes at `index`: tensors sliced, texts picked."""
    idx = index.tolist()
    picked = {}
    for f in fields(record):
        value = getattr(record, f.name)
        picked[f.name] = value[index] if isinstance(value, torch.Tensor) else [value[i] for i in idx]
    return type(record)(**picked)


_QUERY_FIELDS = ("query_ids", "query_mask")  # (B, Tq), left-padded; every other 2-D tensor is (B, Tr)


def _cropped(record):
    """A copy of a record without its all-padding columns: the prompt side cut on the left down to
    the longest real prompt, the response side cut on the right down to the longest valid response."""
    tq = int(record.query_mask.sum(1).max()) if record.batch_size else 0
    tr = int(record.response_mask.sum(1).max()) if record.batch_size else 0
    full_q = record.query_ids.shape[1]
    picked = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name in _QUERY_FIELDS:
            value = value[:, full_q - tq :]
        elif isinstance(value, torch.Tensor) and value.dim() == 2:
            value = value[:, :tr]
        picked[f.name] = value
    return type(record)(**picked)


@dataclass(frozen=True)
class Rollout:
    query_ids: torch.Tensor  # (B, Tq) long, left-padded prompt tokens
    query_mask: torch.Tensor  # (B, Tq) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, Tr) long, sampled tokens; pad after EOS
    response_mask: torch.Tensor  # (B, Tr) 1 up to and including the first EOS
    ended_with_eos: torch.Tensor  # (B,) bool: the response emitted EOS within the budget
    prompts: list[str]  # B prompt texts (as the policy saw them)
    responses: list[str]  # B response texts, special tokens removed

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
        return _select(self, index)

    def cropped(self) -> "Rollout":
        """The same episodes without the columns that are padding in every row (views, no copy)."""
        return _cropped(self)


@dataclass(frozen=True)
class Experience(Rollout):
    logprobs: torch.Tensor  # (B, Tr) log π_old(a_t|s_t), sampling temperature applied
    ref_logprobs: torch.Tensor  # (B, Tr) log π_ref(a_t|s_t), same temperature
    entropy: torch.Tensor  # (B, Tr) H(π_old(·|s_t))
    values: torch.Tensor  # (B, Tr) V_old(s_t)
    scores: torch.Tensor  # (B,) reward-source score of the whole response (penalties applied)
    kl: torch.Tensor  # (B, Tr) per-token KL estimate (k1/k2/k3) to the reference, 0 on padding
    rewards: torch.Tensor  # (B, Tr) −β·kl_t, + score at the last valid token
    advantages: torch.Tensor  # (B, Tr) GAE advantages (whitened over the global batch if configured)
    returns: torch.Tensor  # (B, Tr) GAE advantages (before whitening) + values: the value targets

    def select(self, index: torch.Tensor) -> "Experience":
        return _select(self, index)

    def cropped(self) -> "Experience":
        return _cropped(self)
