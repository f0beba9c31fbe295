"""Token-budget micro-batches: the split by hand, cropping, and the same update as the padded path."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import PPOConfig
from rlhfkit.metric_names import M
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.load import disable_dropout, load_causal_lm, load_reward_model, load_tokenizer
from rlhfkit.models.packed_attention import use_packed_attention
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
    # Real lengths q + r = [5, 6, 7, 3, 6], taken in order: [0] 5, + row 1 = 11 ≤ 14; + row 2 = 18 > 14, new batch;
    # [2] 7, + row 3 = 10; + row 4 = 16 > 14, new batch [4].
    assert _ids(token_budget_split(torch.arange(5), Q, R, budget=14)) == [[0, 1], [2, 3], [4]]
    # `rows` are indices into the batch: the subset [3, 0, 4] is 3 + 5 + 6 = 14 tokens, one micro-batch.
    assert _ids(token_budget_split(torch.tensor([3, 0, 4]), Q, R, budget=14)) == [[3, 0, 4]]
    # a row longer than the budget is a micro-batch of its own; nothing is dropped
    assert _ids(token_budget_split(torch.arange(5), Q, R, budget=3)) == [[0], [1], [2], [3], [4]]


def test_a_split_that_ignores_the_prompts_is_caught():
    """Broken variant: a budget on response tokens alone puts rows 0-3 together, 5 + 6 + 7 + 3 = 21 > 14
    real tokens; the test above would fail on it."""
    broken = _ids(token_budget_split(torch.arange(5), torch.zeros_like(Q), R, 14))
    assert broken == [[0, 1, 2, 3], [4]]
    assert any(int((Q[b] + R[b]).sum()) > 14 for b in map(torch.tensor, broken))


def test_step_plan_fixed_and_budget():
    order = torch.tensor([4, 3, 2, 1, 0, 5, 6, 7])
    q, r = torch.ones(8, dtype=torch.long), torch.tensor([1, 1, 1, 1, 1, 1, 1, 9])
    fixed = step_micro_batches(order, q, r, mini_batch_size=2, accumulation=2, budget=None)
    assert [_ids(step) for step in fixed] == [[[4, 3], [2, 1]], [[0, 5], [6, 7]]]
    # budget 8: step 1's rows (2 tokens each) go 4 per micro-batch; step 2's long row 7 (10 tokens) alone
    budget = step_micro_batches(order, q, r, mini_batch_size=2, accumulation=2, budget=8)
    assert [_ids(step) for step in budget] == [[[4, 3, 2, 1]], [[0, 5, 6], [7]]]
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
    if budget is not None:
        for model in (actor_critic.policy, actor_critic.critic, reference):
            use_packed_attention(model)
    rollout = _rollout(actor_critic.policy.config.vocab_size)
    if budget is None:
        batches = contiguous_chunks(BATCH, 4)
    else:
        plan = step_micro_batches(order, rollout.query_mask.sum(1), rollout.response_mask.sum(1), 4, 2, budget)
        batches = [rows for step in plan for rows in step]
    settings = AdvantageSettings(0.1, "k1", 1.0, 0.95, False, True)
    scores = torch.linspace(-1, 1, BATCH)
    return make_experience(rollout, scores, actor_critic, reference, settings, 0.7, batches, packed=budget is not None), actor_critic


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


def test_packed_rows_by_hand():
    from rlhfkit.models.response_slots import packed_rows

    # row 0: prompt [7, 8] (2 left pads), response [9, 2] + 1 pad; row 1: prompt [5, 6, 7, 4], response [3] + 2 pads
    qids, qmask = torch.tensor([[0, 0, 7, 8], [5, 6, 7, 4]]), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    rids, rmask = torch.tensor([[9, 2, 1], [3, 1, 1]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    ids, slots = packed_rows(qids, qmask, rids, rmask)
    assert ids.tolist() == [[7, 8, 9, 2, 5, 6, 7, 4, 3]]  # real tokens only, row after row
    assert slots.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4]]  # restarting per row
    # response token t of a row is predicted by the position before it: 9 ← 8 (1), 2 ← 9 (2), 3 ← 4 (7)
    assert slots.positions.tolist() == [1, 2, 7] and slots.targets(ids).tolist() == [[9, 2, 3]]
    assert slots.rows.tolist() == [0, 0, 1] and slots.cols.tolist() == [0, 1, 0]
    assert slots.to_grid(torch.tensor([[0.5, 0.25, 2.0]])).tolist() == [[0.5, 0.25, 0.0], [2.0, 0.0, 0.0]]
    assert torch.equal(slots.logits_to_keep(torch.zeros(1, 9)), slots.positions)


@pytest.mark.parametrize("attention", ["sdpa", "rlhfkit_packed"])
def test_packed_rows_do_not_see_each_other(models, attention):
    """transformers' block-diagonal mask from restarting position ids (sdpa), or rlhfkit's row-by-row
    SDPA (rlhfkit_packed): each row's logits in the pack equal that row alone (a pack whose rows attended
    to each other would fail this)."""
    from rlhfkit.models.actor_critic import response_logprobs
    from rlhfkit.models.response_slots import packed_rows

    qids, qmask = torch.tensor([[1, 1, 7, 8], [5, 6, 7, 4]]), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    rids, rmask = torch.tensor([[9, 2, 1], [3, 1, 1]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    ids, slots = packed_rows(qids, qmask, rids, rmask)
    tiny_policy = models()[0].policy
    tiny_policy.set_attn_implementation(attention)  # the block-diagonal mask, or models/packed_attention.py row by row
    with torch.no_grad():
        packed = response_logprobs(tiny_policy, ids, None, slots, 0.7)
        for row in range(2):
            real = torch.cat([qmask[row], rmask[row]]).bool()
            alone = torch.cat([qids[row], rids[row]])[real].unsqueeze(0)
            q = int(qmask[row].sum())
            expected = response_logprobs(tiny_policy, alone, torch.ones_like(alone), q, 0.7)[0]
            torch.testing.assert_close(packed[row, : len(expected)], expected, atol=1e-5, rtol=0)
        # broken variant: positions counted over the whole pack -> one long sequence, row 1 reads row 0
        broken = response_logprobs(tiny_policy, ids, None, slots._replace(position_ids=torch.arange(ids.shape[1])[None]), 0.7)
    assert (broken[1, 0] - packed[1, 0]).abs() > 1e-4


def _update_with(exp: Experience, actor_critic: ActorCritic, entropy_coef: float):
    ppo = PPOConfig(batch_size=BATCH, mini_batch_size=4, gradient_accumulation_steps=2, ppo_epochs=1,
                    vf_coef=0.5, entropy_coef=entropy_coef, max_grad_norm=None)
    accelerator = make_accelerator("cpu", "no", 2)
    optimizer = torch.optim.SGD(actor_critic.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    result = ppo_update(exp, actor_critic, optimizer, scheduler, accelerator, ppo, torch.Generator().manual_seed(5),
                        Collectives(accelerator.device), FaultGuard("ppo", 3), iteration=1)
    assert result.fault is None
    return accelerator.unwrap_model(actor_critic).state_dict()


def test_the_entropy_is_in_the_graph_only_with_an_entropy_bonus(models, monkeypatch):
    """Without a bonus the entropy is a statistic: no graph for it (its softmax over the vocabulary
    would hold two tokens × vocabulary tensors), the same update as with it in the graph × 0; with a
    bonus its gradient reaches the policy."""
    exp, actor_critic = _experience(models, None, torch.arange(BATCH))
    ids, mask, response = exp.input_ids[:4], exp.attention_mask[:4], exp.query_ids.shape[1]
    with_graph = actor_critic(ids, mask, response, 0.7)
    without = actor_critic(ids, mask, response, 0.7, entropy_grad=False)
    assert with_graph.entropy.requires_grad and not without.entropy.requires_grad
    assert without.logprobs.requires_grad and without.values.requires_grad
    torch.testing.assert_close(without.entropy, with_graph.entropy, rtol=0, atol=0)

    forward, asked = ActorCritic.forward, []

    def recording(self, *args, entropy_grad=True):
        asked.append(entropy_grad)
        return forward(self, *args, entropy_grad=entropy_grad)

    monkeypatch.setattr(ActorCritic, "forward", recording)
    no_bonus = _update_with(exp, models()[0], entropy_coef=0.0)
    assert asked and not any(asked)  # the update asked for no entropy graph in every micro-batch
    asked.clear()
    bonus = _update_with(exp, models()[0], entropy_coef=0.5)
    assert asked and all(asked)
    monkeypatch.setattr(ActorCritic, "forward", lambda self, *a, entropy_grad=True: forward(self, *a, entropy_grad=True))
    in_graph_times_zero = _update_with(exp, models()[0], entropy_coef=0.0)
    monkeypatch.undo()
    for name, tensor in no_bonus.items():
        torch.testing.assert_close(tensor, in_graph_times_zero[name], rtol=0, atol=0, msg=name)
    assert max((bonus[k] - v).abs().max().item() for k, v in no_bonus.items() if k.startswith("policy.")) > 1e-6
