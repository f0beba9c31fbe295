"""Sampling responses: a `GenerationBackend` protocol and the Hugging Face `generate` backend
(the vLLM one, `ppo.generation.backend: vllm`, is rollout/vllm_backend.py).

The backend only samples token ids. Log-probabilities are recomputed afterwards by a forward
pass under the same temperature (experience.py), so the sampler and the learner agree exactly
(N+ detail 16) whatever the backend — the property a vLLM backend relies on too.
Top-k/top-p other than off make the sampler's distribution differ from the temperature-only
softmax used for logprobs; they are allowed but documented as such. Temperature-only sampling
goes through rollout/sampling.py's inverse-CDF sampler (the same distribution, cheaper on CPU than
`torch.multinomial`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from rlhfkit.config.stages import GenerationSection
from rlhfkit.rollout.sampling import generate_kwargs
from rlhfkit.rollout.types import Rollout


class GenerationBackend(Protocol):
    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """(B, Tq) left-padded prompts -> (B, Tr) sampled response ids (pad after the end)."""
        ...


class HFGenerationBackend:
    """`model.generate` with sampling, stopping at EOS; dropout is already off in the policy."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: GenerationSection):
        self.model = model
        # With top-p set, top_k 0 is passed through as "off" (None would let generate() fall back to 50).
        sampling = generate_kwargs(cfg.temperature, cfg.top_k, cfg.top_p)
        self.logits_processor = sampling.pop("logits_processor", None)
        self.config = GenerationConfig(
            **sampling,
            max_new_tokens=cfg.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    @torch.no_grad()
    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        # generate() fills unset fields from the checkpoint's own generation_config (top_k=50,
        # suppress_tokens, repetition_penalty…), which would make the sampler differ from the
        # temperature-only softmax our logprobs use. Swap ours in for the call.
        was_training, saved = self.model.training, self.model.generation_config
        self.model.eval()
        self.model.generation_config = self.config
        try:
            out = self.model.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=self.config,
                                      logits_processor=self.logits_processor)
        finally:
            self.model.generation_config = saved
            self.model.train(was_training)
        return out[:, query_ids.shape[1] :]


def truncate_after_eos(response_ids: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad everything after the first EOS; return (ids, mask incl. the EOS, ended_with_eos).

    The mask is positional — it does not look for pad ids — so a pad token the policy happened
    to sample mid-response is still a valid action.
    """
    is_eos = response_ids == eos_id
    ended = is_eos.any(dim=1)
    length = response_ids.shape[1]
    positions = torch.arange(length, device=response_ids.device).expand_as(response_ids)
    first_eos = torch.where(ended, is_eos.long().argmax(dim=1), torch.full_like(ended, length, dtype=torch.long))
    mask = positions <= first_eos.unsqueeze(1)
    ids = response_ids.masked_fill(~mask, pad_id)
    return ids, mask.long(), ended


def sample_rollout(
    backend: GenerationBackend,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
) -> Rollout:
    """Sample one response per prompt and package it as a Rollout (no scores yet)."""
    raw = backend.generate(query_ids, query_mask)
    response_ids, response_mask, ended = truncate_after_eos(raw, tokenizer.eos_token_id, tokenizer.pad_token_id)
    responses = tokenizer.batch_decode(response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id), skip_special_tokens=True)
    return Rollout(
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        ended_with_eos=ended,
        prompts=prompts,
        responses=responses,
    )
