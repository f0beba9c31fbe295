"""Attention over packed rows without the dense block-diagonal mask, for SDPA and eager models.

A packed micro-batch (models/response_slots.py) is one sequence of N tokens from several rows.
transformers keeps the rows apart with a block-diagonal (N, N) mask built from the restarting
position ids, and SDPA then computes all N² scores: on CPU, at the default preset's shapes, that
cost more than the padding it removed (bench/padding_free.py). Flash-attention's variable-length
kernels take the row boundaries instead (`cu_seq_lens_q/k`, transformers' FlashAttentionKwargs);
this module gives SDPA the same: registered as the attention implementation "rlhfkit_packed" (`ppo.micro_batch_tokens`
switches the PPO models' SDPA to it, `use_packed_attention`), it
runs causal SDPA row by row when the forward passes `cu_seq_lens_q`, and is plain SDPA
otherwise (generation, padded batches, scoring) — the same function with the same mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_ATTENTION = "rlhfkit_packed"


def packed_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        is_causal: bool | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                        **kwargs) -> tuple[torch.Tensor, None]:
    """query (1, H, N, d), key / value (1, H_kv, N, d) → (1, N, H, d), as transformers' SDPA returns it."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: share each key head
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu_seq_lens_q.tolist()
    rows = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True,
                                           dropout_p=dropout if module.training else 0.0, scale=scaling)
            for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(rows, 2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_forward)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def use_packed_attention(model: torch.nn.Module) -> None:
    """Switch an SDPA transformers model to the row-by-row attention for packed inputs (flash-attention
    takes `cu_seq_lens_q/k` natively; eager and other implementations stay as they are, masked)."""
    config = getattr(model, "config", None)
    if config is not None and config._attn_implementation == "sdpa":
        model.set_attn_implementation(PACKED_ATTENTION)
