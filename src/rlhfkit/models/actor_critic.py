"""Policy and critic as one module: one `accelerator.prepare`, one optimizer, one forward.

DeepSpeed gives an engine per prepared model and optimizer, and DDP / FSDP synchronise gradients
from the forward of the module they wrap. Holding the policy (actor) and the value model (critic)
in one `nn.Module` whose forward runs both lets every accelerate back end treat PPO's two trained
networks as one model, as TRL's and OpenRLHF's PPO do. The critic is either a
`*ForSequenceClassification` model of its own (its scalar `score` head applied at every position)
or, with `ppo.value_head: shared`, a `SharedValueHead` on the policy's last hidden state (same
forward pass; the value loss then also trains the policy's trunk).

The forward returns, for the response part of each sequence, log π(a_t|s_t) under the sampling
temperature (N+ detail 16), the entropy of π(·|s_t), and V(s_t); the logits that predict response
token t sit at position Tq + t − 1. `response_logprobs` does the same for a frozen model alone
(the reference). No forward here builds a KV cache (`use_cache=False`: nothing reads it), and the
LM head runs on the response positions only (`logits_to_keep`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from rlhfkit.algos.logprobs import logprobs_and_entropy, logprobs_from_logits
from rlhfkit.models.lora import is_lora
from rlhfkit.models.response_slots import ResponseSlots
from rlhfkit.models.scoring import position_ids_from_mask
from rlhfkit.models.value_head import SharedValueHead


class ActorCriticOutput(NamedTuple):
    logprobs: torch.Tensor  # (B, Tr) log π(a_t|s_t), logits / T
    entropy: torch.Tensor  # (B, Tr) H(π(·|s_t)) under the same temperature
    values: torch.Tensor  # (B, Tr) V(s_t), fp32


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    response: int | ResponseSlots) -> torch.Tensor:
    """Logits that predict each response token: (B, Tr, V) for the padded layout (`response` = Tq:
    positions Tq−1 … Tq+Tr−2), (1, M, V) for packed slots (models/response_slots.py)."""
    slots = _slots(input_ids, response)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask, slots),
                 use_cache=False, logits_to_keep=slots.logits_to_keep(input_ids), **slots.attention_kwargs()).logits


def _slots(input_ids: torch.Tensor, response: int | ResponseSlots) -> ResponseSlots:
    return response if isinstance(response, ResponseSlots) else ResponseSlots.padded(response, input_ids.shape[1] - response)


def _position_ids(attention_mask: torch.Tensor | None, slots: ResponseSlots) -> torch.Tensor:
    return slots.position_ids if slots.is_packed else position_ids_from_mask(attention_mask)


def response_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      response: int | ResponseSlots, temperature: float) -> torch.Tensor:
    """(B, Tr) log π(a_t|s_t) of the response tokens under softmax(logits / T) (0 on padding when packed)."""
    slots = _slots(input_ids, response)
    logits = response_logits(model, input_ids, attention_mask, slots)
    return slots.to_grid(logprobs_from_logits(logits, slots.targets(input_ids), temperature))


class ActorCritic(nn.Module):
    """The trained pair. `critic`: a sequence-classification model, or a `SharedValueHead`."""

    def __init__(self, policy: nn.Module, critic: nn.Module):
        super().__init__()
        self.policy = policy
        self.critic = critic
        # FSDP's transformer-based auto-wrap reads the block classes to shard from `_no_split_modules`.
        self._no_split_modules = sorted({*(getattr(policy, "_no_split_modules", None) or []),
                                         *(getattr(critic, "_no_split_modules", None) or [])})

    @property
    def shared_head(self) -> bool:
        return isinstance(self.critic, SharedValueHead)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, response: int | ResponseSlots,
                temperature: float, entropy_grad: bool = True) -> ActorCriticOutput:
        """`response`: Tq for the padded layout (every response starts at column Tq), or the slots of a
        packed micro-batch (models/response_slots.py; `attention_mask` None). `entropy_grad=False`: the
        entropy is a statistic only (no entropy bonus in the loss), so no gradient flows through it.
        Log-probabilities and entropy come from one fused pass over the logits (algos/logprobs.py,
        `logprobs_and_entropy`)."""
        slots = _slots(input_ids, response)
        position_ids = _position_ids(attention_mask, slots)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                          logits_to_keep=slots.logits_to_keep(input_ids), output_hidden_states=self.shared_head,
                          **slots.attention_kwargs())
        logprobs, entropy = logprobs_and_entropy(out.logits, slots.targets(input_ids), temperature, entropy_grad)
        logprobs, entropy = slots.to_grid(logprobs), slots.to_grid(entropy)
        if self.shared_head:
            values = self.critic(slots.pick(out.hidden_states[-1]))
        else:  # the critic's scalar head at every position, not only the last (HF heads sit under `score`)
            critic = self.critic.get_base_model() if is_lora(self.critic) else self.critic  # LoRA: layers adapted in place
            backbone = getattr(critic, critic.base_model_prefix)
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, **slots.attention_kwargs()).last_hidden_state
            values = critic.score(slots.pick(hidden)).squeeze(-1)
        return ActorCriticOutput(logprobs, entropy, slots.to_grid(values.float()))
