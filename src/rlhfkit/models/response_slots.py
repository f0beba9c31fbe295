"""Where the response tokens sit in the model's input, for the two layouts rlhfkit feeds its models.

* **padded** (the Rollout as sampled): B rows of [left-padded prompt | right-padded response]; every
  response starts at column Tq. `ResponseSlots.padded(Tq, Tr)`; outputs are (B, Tr) slices.
* **packed** (`packed_rows`, token-budget micro-batches): the real tokens of every row — prompt,
  then response up to its EOS — one after another in a single (1, N) sequence, `position_ids`
  restarting at 0 for each row and no attention mask. transformers (≥ 4.53, `masking_utils`)
  reads row boundaries from the position ids and builds a block-diagonal causal mask, so no row
  attends to another (flash-attention's variable-length kernels do the same without a mask).
  No padding token is computed at all. Outputs are picked at the M valid response positions
  and scattered back into a (B, Tr) grid, 0 on padding.

Either way the logits that predict response token t come from the position just before it, and
the LM head runs only on those positions (`logits_to_keep`: the Tr positions Tq − 1 … Tq + Tr − 2,
or exactly the M positions), so it never multiplies prompt hidden states by the vocabulary matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ResponseSlots(NamedTuple):
    width: int  # Tr: response slots per row of the output grid
    start: int = 0  # padded: column of every row's first response token (Tq)
    positions: torch.Tensor | None = None  # packed: (M,) positions whose outputs predict the valid response tokens
    rows: torch.Tensor | None = None  # packed: (M,) the row of each, in the (B, Tr) grid
    cols: torch.Tensor | None = None  # packed: (M,) its response index t
    position_ids: torch.Tensor | None = None  # packed: (1, N) restarting per row
    batch: int = 0  # packed: B, rows of the output grid
    cu_seq_lens: torch.Tensor | None = None  # packed: (B + 1,) int32 row boundaries in the sequence

    def attention_kwargs(self) -> dict:
        """transformers' FlashAttentionKwargs for a packed sequence: flash-attention's variable-length
        kernels and rlhfkit's packed SDPA (models/packed_attention.py) read the row boundaries from them;
        plain SDPA ignores them and masks (the block-diagonal mask from the position ids)."""
        if not self.is_packed:
            return {}
        longest = int((self.cu_seq_lens[1:] - self.cu_seq_lens[:-1]).max())
        return {"cu_seq_lens_q": self.cu_seq_lens, "cu_seq_lens_k": self.cu_seq_lens,
                "max_length_q": longest, "max_length_k": longest}

    @classmethod
    def padded(cls, query_length: int, response_length: int) -> "ResponseSlots":
        return cls(width=response_length, start=query_length)

    @property
    def is_packed(self) -> bool:
        return self.positions is not None

    def logits_to_keep(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The positions the LM head runs on, exactly those that predict a response token: Tq − 1 …
        Tq + Tr − 2 of every row, or the M predicting positions packed. (An int `logits_to_keep = Tr + 1`
        would keep one more position, whose logits the caller would slice off — and the backward of
        that slice zero-fills and copies a (B, Tr + 1, V) gradient.)"""
        if self.is_packed:
            return self.positions
        return torch.arange(self.start - 1, self.start - 1 + self.width, device=input_ids.device)

    def pick(self, full: torch.Tensor) -> torch.Tensor:
        """The same positions from an output over all positions (hidden states): (B, Tr, …) or (1, M, …)."""
        if self.is_packed:
            return full[:, self.positions]
        return full[:, self.start - 1 : self.start - 1 + self.width]

    def targets(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The response token ids: (B, Tr), or (1, M) packed."""
        if self.is_packed:
            return input_ids[:, self.positions + 1]
        return input_ids[:, self.start : self.start + self.width]

    def to_grid(self, picked: torch.Tensor) -> torch.Tensor:
        """(B, Tr) from a picked per-token output; packed: scattered, 0 on padding (differentiable)."""
        if not self.is_packed:
            return picked
        grid = picked.new_zeros(self.batch, self.width)
        return grid.index_put((self.rows, self.cols), picked.reshape(-1))


def packed_rows(query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor,
                response_mask: torch.Tensor) -> tuple[torch.Tensor, ResponseSlots]:
    """(input_ids (1, N), slots) of the packed layout. query_* (B, Tq) left-padded, response_* (B, Tr)
    right-padded; N = the real prompt and valid response tokens of all rows."""
    ids = torch.cat([query_ids, response_ids], 1)
    real = torch.cat([query_mask, response_mask], 1).bool()
    q_len, r_len = query_mask.sum(1), response_mask.sum(1)
    lengths = q_len + r_len
    offsets = lengths.cumsum(0) - lengths  # where each row starts in the packed sequence
    row_of_token = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), lengths)
    position_ids = torch.arange(int(lengths.sum()), device=ids.device) - offsets[row_of_token]
    rows = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), r_len)
    cols = torch.arange(len(rows), device=ids.device) - (r_len.cumsum(0) - r_len)[rows]
    positions = offsets[rows] + q_len[rows] - 1 + cols  # the token before response token `cols` of row `rows`
    cu_seq_lens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).int()
    slots = ResponseSlots(width=response_ids.shape[1], positions=positions, rows=rows, cols=cols,
                          position_ids=position_ids.unsqueeze(0), batch=len(ids), cu_seq_lens=cu_seq_lens)
    return ids[real].unsqueeze(0), slots
