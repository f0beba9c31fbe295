"""How the rows of an optimiser step become micro-batches: a fixed row count, or a token budget.

Fixed (`ppo.micro_batch_tokens` empty): `gradient_accumulation_steps` micro-batches of
`mini_batch_size` rows each, in shuffled order, every one padded to the rollout's full width
Tq + Tr (the prompts left-padded to the longest prompt of the batch, the responses right-padded
to the longest response).

Token budget (`ppo.micro_batch_tokens` = K): the same rows per optimiser step, sorted by response
length then prompt length (longest first), and cut greedily into micro-batches whose *cropped*
size — rows × (longest prompt + longest response among them), the tensor the forward really
processes once the all-padding columns are dropped (`Rollout.cropped`) — stays within K. Similar
lengths share a micro-batch, so little padding remains; a row longer than K alone is a
micro-batch of its own. A step's loss is a token sum over its rows divided by the step's token
count (training/ppo_update.py), so how its rows are grouped changes the result only by float
rounding.

Why not one packed sequence per micro-batch (rows concatenated, `position_ids` restarting per
row, no attention mask — transformers ≥ 4.53 detects that layout and builds a block-diagonal
mask)? On CPU SDPA that mask is dense: attention costs (Σ lengths)² instead of Σ length², and
bench/padding_free.py measured it slower than the padded batch on the default preset's shapes.
Packing pays with flash-attention's variable-length kernels (GPUs), which rlhfkit does not
select.
"""

from __future__ import annotations

import torch


def token_budget_split(rows: torch.Tensor, query_lengths: torch.Tensor, response_lengths: torch.Tensor,
                       budget: int) -> list[torch.Tensor]:
    """`rows` (indices into the batch) cut into micro-batches of cropped size ≤ `budget` tokens.

    query_lengths, response_lengths: (B,) real prompt tokens and valid response tokens of every row
    of the batch. Rows are taken longest response first (ties: longest prompt, then their order in
    `rows`); a micro-batch grows while (its rows + 1) × (max prompt + max response) fits."""
    q = query_lengths[rows].tolist()
    r = response_lengths[rows].tolist()
    order = sorted(range(len(q)), key=lambda i: (-r[i], -q[i], i))
    batches: list[list[int]] = []
    max_q = max_r = 0
    for i in order:
        new_q, new_r = max(max_q, q[i]), max(max_r, r[i])
        if batches and (len(batches[-1]) + 1) * (new_q + new_r) <= budget:
            batches[-1].append(i)
            max_q, max_r = new_q, new_r
        else:
            batches.append([i])
            max_q, max_r = q[i], r[i]
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
