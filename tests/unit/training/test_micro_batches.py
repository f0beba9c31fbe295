"""Token-budget micro-batches: the split by hand, cropping, and the same update as the padded path."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import PPOConfig
from rlhfkit.metric_names import M
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.load import disable_dropout, load_causal_lm, load_reward_model, load_tokenizer
from rlhfkit.rollout.experience import AdvantageSettings, contiguous_chunks, make_experience
from rlhfkit.rollout.types import Experience, Rollout
from rlhfkit.training.distributed import Collectives
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import make_accelerator
from rlhfkit.training.micro_batches import step_micro_batches, token_budget_split
from rlhfkit.training.ppo_update import ppo_update

# q = real prompt tokens, r = valid response tokens of rows 0..4
Q = torch.tensor([3, 1, 2, 2, 4])
R = torch.tensor([2, 5, 5, 1, 2])


def _ids(batches):
    return [b.tolist() for b in batches]


def test_token_budget_split_by_hand():
    # Longest response first (ties: longest prompt): 2 (q2 r5), 1 (q1 r5), 4 (q4 r2), 0 (q3 r2), 3 (q2 r1).
    # [2] is 1 × (2 + 5) = 7; + row 1: 2 × (2 + 5) = 14 ≤ 14, taken; + row 4: 3 × (4 + 5) = 27 > 14, new batch;
    # [4] = 6; + row 0: 2 × (4 + 2) = 12 ≤ 14; + row 3: 3 × (4 + 2) = 18 > 14, new batch [3].
    assert _ids(token_budget_split(torch.arange(5), Q, R, budget=14)) == [[2, 1], [4, 0], [3]]
    # `rows` are indices into the batch: the subset [3, 0, 4] gives [4, 0] (2 × 6 = 12) then [3].
    assert _ids(token_budget_split(torch.tensor([3, 0, 4]), Q, R, budget=14)) == [[4, 0], [3]]
    # a row longer than the budget is a micro-batch of its own; nothing is dropped
    assert _ids(token_budget_split(torch.arange(5), Q, R, budget=3)) == [[2], [1], [4], [0], [3]]


def test_a_split_that_ignores_the_prompts_is_caught():
    """Broken variant: a budget on response tokens alone packs rows 4, 0, 3 together, whose cropped
    tensor is 3 × (4 + 2) = 18 > 14 tokens; the test above would fail on it."""
    def response_only(rows, q, r, budget):
        return token_budget_split(rows, torch.zeros_like(q), r, budget)

    broken = _ids(response_only(torch.arange(5), Q, R, 14))
    assert broken != [[2, 1], [4, 0], [3]]
    assert any(len(b) * (max(Q[b]) + max(R[b])) > 14 for b in map(torch.tensor, broken))


def test_step_plan_fixed_and_budget():
    order = torch.tensor([4, 3, 2, 1, 0, 5, 6, 7])
    q, r = torch.ones(8, dtype=torch.long), torch.tensor([1, 1, 1, 1, 1, 1, 1, 9])
    fixed = step_micro_batches(order, q, r, mini_batch_size=2, accumulation=2, budget=None)
    assert [_ids(step) for step in fixed] == [[[4, 3], [2, 1]], [[0, 5], [6, 7]]]
    # budget 8: step 1's rows (r = 1, size 2 each) go 4 per micro-batch; step 2 puts the long row 7 alone
    budget = step_micro_batches(order, q, r, mini_batch_size=2, accumulation=2, budget=8)
    assert [_ids(step) for step in budget] == [[[4, 3, 2, 1]], [[7], [0, 5, 6]]]
    # every step keeps exactly its rows: the optimiser steps are those of the fixed plan
    for a, b in zip(fixed, budget):
        assert sorted(torch.cat(a).tolist()) == sorted(torch.cat(b).tolist())


def test_cropped_drops_only_all_padding_columns():
    # Tq = 4 (left-padded), Tr = 5 (right-padded); the longest prompt has 3 tokens, the longest response 2
    rollout = Rollout(
        query_ids=torch.tensor([[0, 0, 7, 8], [0, 5, 6, 7]]), query_mask=torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]),
        response_ids=torch.tensor([[9, 2, 1, 1, 1], [3, 1, 1, 1, 1]]),
        response_mask=torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]),
        ended_with_eos=torch.tensor([True, False]), prompts=["a", "b"], responses=["x", "y"])
    c = rollout.cropped()
    assert c.query_ids.tolist() == [[0, 7, 8], [5, 6, 7]] and c.query_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert c.response_ids.tolist() == [[9, 2], [3, 1]] and c.response_mask.tolist() == [[1, 1], [1, 0]]
    assert c.ended_with_eos.tolist() == [True, False] and c.prompts == ["a", "b"]


# ---------------------------------------------------------------- padded vs token budget, end to end

BATCH, TQ, TR = 16, 6, 9


def _rollout(vocab: int) -> Rollout:
    g = torch.Generator().manual_seed(7)
    q_len = torch.randint(1, TQ + 1, (BATCH,), generator=g)
    r_len = torch.randint(1, TR + 1, (BATCH,), generator=g)
    query_mask = (torch.arange(TQ).unsqueeze(0) >= TQ - q_len.unsqueeze(1)).long()
    response_mask = (torch.arange(TR).unsqueeze(0) < r_len.unsqueeze(1)).long()
    query = torch.randint(3, vocab, (BATCH, TQ), generator=g).masked_fill(query_mask == 0, 1)
    response = torch.randint(3, vocab, (BATCH, TR), generator=g).masked_fill(response_mask == 0, 1)
    return Rollout(query, query_mask, response, response_mask, r_len < TR, [""] * BATCH, [""] * BATCH)


@pytest.fixture()
def models(tiny_model_dir):
    section = ModelSection(name_or_path=str(tiny_model_dir))
    tokenizer = load_tokenizer(section, "policy")

    def build():
        torch.manual_seed(0)
        policy = disable_dropout(load_causal_lm(section, tokenizer, "policy"))
        critic = disable_dropout(load_reward_model(section, tokenizer, "critic"))
        return ActorCritic(policy, critic).eval(), disable_dropout(load_causal_lm(section, tokenizer, "ref")).eval()
    return build


def _experience(models, budget: int | None, order: torch.Tensor) -> tuple[Experience, ActorCritic]:
    actor_critic, reference = models()
    rollout = _rollout(actor_critic.policy.config.vocab_size)
    if budget is None:
        batches = contiguous_chunks(BATCH, 4)
    else:
        plan = step_micro_batches(order, rollout.query_mask.sum(1), rollout.response_mask.sum(1), 4, 2, budget)
        batches = [rows for step in plan for rows in step]
    settings = AdvantageSettings(0.1, "k1", 1.0, 0.95, False, True)
    scores = torch.linspace(-1, 1, BATCH)
    return make_experience(rollout, scores, actor_critic, reference, settings, 0.7, batches, crop=budget is not None), actor_critic


def _update(exp: Experience, actor_critic: ActorCritic, budget: int | None, order: torch.Tensor):
    ppo = PPOConfig(batch_size=BATCH, mini_batch_size=4, gradient_accumulation_steps=2, ppo_epochs=2,
                    micro_batch_tokens=budget, vf_coef=0.5, entropy_coef=0.01, max_grad_norm=None)
    accelerator = make_accelerator("cpu", "no", 2)
    optimizer = torch.optim.SGD(actor_critic.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    result = ppo_update(exp, actor_critic, optimizer, scheduler, accelerator, ppo, torch.Generator().manual_seed(5),
                        Collectives(accelerator.device), FaultGuard("ppo", 3), iteration=1, first_order=order)
    return result, accelerator.unwrap_model(actor_critic)


def test_token_budget_gives_the_padded_experience_and_update(models):
    order = torch.randperm(BATCH, generator=torch.Generator().manual_seed(11))
    padded, ac_padded = _experience(models, None, order)
    packed, ac_packed = _experience(models, 24, order)
    mask = padded.response_mask.bool()
    for name in ("logprobs", "ref_logprobs", "entropy", "values", "advantages", "returns", "rewards"):
        torch.testing.assert_close(getattr(packed, name)[mask], getattr(padded, name)[mask], atol=2e-6, rtol=1e-5, msg=name)
        assert (getattr(packed, name)[~mask] == 0).all(), name  # 0 on padding, as the padded path's outputs
    r_padded, m_padded = _update(padded, ac_padded, None, order)
    r_packed, m_packed = _update(packed, ac_packed, 24, order)
    assert r_padded.fault is r_packed.fault is None
    for key in (M.POLICY_LOSS, M.VALUE_LOSS, M.ENTROPY_TRAIN, M.CLIPFRAC, M.APPROX_KL, M.RATIO):
        assert r_packed.stats[key] == pytest.approx(r_padded.stats[key], rel=1e-5, abs=1e-6), key
    for (name, a), b in zip(m_padded.state_dict().items(), m_packed.state_dict().values()):
        torch.testing.assert_close(b, a, atol=2e-6, rtol=1e-5, msg=name)
    initial, _ = models()
    moved = max((a - b).abs().max().item() for a, b in zip(m_padded.state_dict().values(), initial.state_dict().values()))
    assert moved > 1e-3  # the update changed the models: the comparison is not of two untouched copies
    # the first micro-batch reproduces the experience's logprobs bit for bit in both paths
    assert r_padded.stats[M.FIRST_RATIO_DEV] == 0.0 and r_packed.stats[M.FIRST_RATIO_DEV] == 0.0
