"""How the rows of an optimiser step become micro-batches: a fixed row count, or a token budget.

Fixed (`ppo.micro_batch_tokens` empty): `gradient_accumulation_steps` micro-batches of
`mini_batch_size` rows each, in shuffled order, every one padded to the rollout's full width
Tq + Tr (the prompts left-padded to the longest prompt of the batch, the responses right-padded
to the longest response).

Token budget (`ppo.micro_batch_tokens` = K): the same rows per optimiser step, in the same
shuffled order, cut greedily into micro-batches of at most K real tokens (prompt + response up
to EOS); each micro-batch goes through the models packed into one sequence with no padding at
all (models/response_slots.py). A row longer than K alone is a micro-batch of its own. A step's
loss is a token sum over its rows divided by the step's token count (training/ppo_update.py), so
how its rows are grouped changes the result only by float rounding.

Packed rows attend row by row (models/packed_attention.py on SDPA, flash-attention's
variable-length kernels on GPUs), so K bounds memory, not the attention cost; under plain SDPA
with transformers' dense block-diagonal mask attention would cost K² per micro-batch
(bench/padding_free.py --dense-mask measures that).
"""

from __future__ import annotations

import torch


def token_budget_split(rows: torch.Tensor, query_lengths: torch.Tensor, response_lengths: torch.Tensor,
                       budget: int) -> list[torch.Tensor]:
    """`rows` (indices into the batch), in their order, cut into micro-batches of ≤ `budget` real tokens.

    query_lengths, response_lengths: (B,) real prompt tokens and valid response tokens of every row
    of the batch. A micro-batch grows while its tokens plus the next row's fit."""
    lengths = (query_lengths[rows] + response_lengths[rows]).tolist()
    batches: list[list[int]] = []
    tokens = 0
    for i, length in enumerate(lengths):
        if batches and tokens + length <= budget:
            batches[-1].append(i)
            tokens += length
        else:
            batches.append([i])
            tokens = length
    return [rows[torch.tensor(b, dtype=torch.long, device=rows.device)] for b in batches]


def step_micro_batches(order: torch.Tensor, query_lengths: torch.Tensor, response_lengths: torch.Tensor,
                       mini_batch_size: int, accumulation: int, budget: int | None) -> list[list[torch.Tensor]]:
    """One epoch's plan: for each optimiser step (mini_batch_size × accumulation rows of `order`),
    its micro-batches as row indices — `accumulation` slices of `mini_batch_size` rows, or with a
    `budget` the token-budget split of the step's rows."""
    step_rows = mini_batch_size * accumulation
    steps = []
    for s in range(len(order) // step_rows):
        rows = order[s * step_rows : (s + 1) * step_rows]
        if budget is None:
            steps.append([rows[k * mini_batch_size : (k + 1) * mini_batch_size] for k in range(accumulation)])
        else:
            steps.append(token_budget_split(rows, query_lengths, response_lengths, budget))
    return steps
