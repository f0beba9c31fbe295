"""Attention over packed rows without the dense block-diagonal mask, for SDPA and eager models.

A packed micro-batch (models/response_slots.py) is one sequence of N tokens from several rows.
transformers keeps the rows apart with a block-diagonal (N, N) mask built from the restarting
position ids, and SDPA then computes all N² scores: on CPU, at the default preset's shapes, that
cost more than the padding it removed (bench/padding_free.py). Flash-attention's variable-length
kernels take the row boundaries instead (`cu_seq_lens_q/k`, transformers' FlashAttentionKwargs);
this module gives SDPA the same: registered as the attention implementation "rlhfkit_packed" (`ppo.micro_batch_tokens`
switches the PPO models' SDPA to it, `use_packed_attention`), when the forward passes
`cu_seq_lens_q` it scatters the rows' queries, keys and values into a (rows, heads, longest row,
d) batch, runs one causal SDPA over it and gathers the real positions back; otherwise it is plain
SDPA (generation, padded batches, scoring) — the same function with the same mask. Padding comes
back only inside attention, where it is a few per cent of the FLOPs. One SDPA call per layer
instead of one per row made the budget path's update 1.15× → 1.26× faster than the padded one
(bench/padding_free.py, 2 threads, quiet, 2026-12-03).
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
    row_of, offset = _row_positions(cu_seq_lens_q, query.shape[2])
    rows, longest = len(cu_seq_lens_q) - 1, int(kwargs.get("max_length_q") or int(offset.max()) + 1)

    def unpack(x: torch.Tensor) -> torch.Tensor:  # (1, H, N, d) → (rows, H, longest, d), each row left-aligned
        padded = x.new_zeros(rows, longest, x.shape[1], x.shape[3])
        padded[row_of, offset] = x[0].transpose(0, 1)
        return padded.transpose(1, 2)

    # Rows are left-aligned, so under the causal mask a real query sees only its own row's real keys:
    # the padding after a row's end is never attended to by a position that is kept.
    out = F.scaled_dot_product_attention(unpack(query), unpack(key), unpack(value), is_causal=True,
                                         dropout_p=dropout if module.training else 0.0, scale=scaling)
    return out.transpose(1, 2)[row_of, offset].unsqueeze(0), None


def _row_positions(cu_seq_lens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the `total` packed positions, its row and its offset within the row."""
    bounds = cu_seq_lens.long()
    row_of = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=bounds.device), bounds[1:] - bounds[:-1],
                                     output_size=total)
    return row_of, torch.arange(total, device=bounds.device) - bounds[row_of]


AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_forward)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def use_packed_attention(model: torch.nn.Module) -> None:
    """Switch an SDPA transformers model to the per-row attention for packed inputs (flash-attention
    takes `cu_seq_lens_q/k` natively; eager and other implementations stay as they are, masked)."""
    config = getattr(model, "config", None)
    if config is not None and config._attn_implementation == "sdpa":
        model.set_attn_implementation(PACKED_ATTENTION)
