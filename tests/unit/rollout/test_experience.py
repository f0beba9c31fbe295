"""Experience building: rewards at the EOS, logprobs under temperature, the on-policy first mini-batch."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.algos.losses import ppo_policy_loss
from rlhfkit.data.tokenize import PromptCollator
from rlhfkit.models.load import disable_dropout, load_reward_model
from rlhfkit.config.sections import ModelSection
from rlhfkit.models.actor_critic import ActorCritic, response_logprobs
from rlhfkit.rollout.experience import AdvantageSettings, contiguous_chunks, make_experience, rewards_and_advantages
from rlhfkit.rollout.generation import sample_rollout, truncate_after_eos
from rlhfkit.rollout.types import Rollout

EOS, PAD = 0, 1
PROMPTS = ["the quick brown fox", "a happy day", "never trust", "you will find love, wealth", "the sad rain falls on", "all"]


def _rollout(tok, prompts, raw_responses, extra_left_pad: int = 0) -> Rollout:
    """A rollout as sample_rollout builds it: left-padded queries, responses truncated after EOS."""
    batch = PromptCollator(tok.pad_token_id)([tok.encode(p) for p in prompts])
    qids, qmask = batch["input_ids"], batch["attention_mask"]
    if extra_left_pad:
        qids = torch.cat([torch.full((len(prompts), extra_left_pad), PAD), qids], 1)
        qmask = torch.cat([torch.zeros(len(prompts), extra_left_pad, dtype=torch.long), qmask], 1)
    ids, mask, ended = truncate_after_eos(torch.tensor(raw_responses), EOS, PAD)
    return Rollout(query_ids=qids, query_mask=qmask, response_ids=ids, response_mask=mask, ended_with_eos=ended,
                   prompts=list(prompts), responses=[""] * len(prompts))


def _raw_responses(n: int, length: int, seed: int = 0) -> list[list[int]]:
    """Random response tokens (ids >= 2), EOS at a different index per row, some rows without EOS."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(2, 300, (n, length), generator=g)
    for b in range(n):
        if b % 3 != 2:  # every third row runs out of budget
            rows[b, (2 * b + 1) % length] = EOS
    rows[0, 1] = PAD  # a sampled pad id before EOS: a valid token
    return rows.tolist()


def _settings(beta=0.1, lam=0.95, whiten=False) -> AdvantageSettings:
    return AdvantageSettings(kl_coef=beta, kl_estimator="k1", gamma=1.0, lam=lam, whiten_rewards=False, whiten_advantages=whiten)


def policy_logprobs(model, rollout: Rollout, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        return response_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1], temperature)


def _critic(model_dir, tok):
    return disable_dropout(load_reward_model(ModelSection(name_or_path=str(model_dir)), tok, "critic")).eval()


# ---------------------------------------------------------------- rewards at the EOS


def test_score_lands_on_the_eos_token_and_nothing_after_it():
    # 2 episodes, Tr = 6. Row 0: EOS at index 2 (pads after); row 1: no EOS (truncated).
    raw = torch.tensor([[5, 6, EOS, 9, 9, 9], [5, 6, 7, 8, 9, 10]])
    _, mask, _ = truncate_after_eos(raw, EOS, PAD)
    scores = torch.tensor([2.0, -1.0])
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 1.0, 1.0, 1.0], [-1.0, -1.5, -0.7, -0.2, -3.0, -0.1]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.9, 7.0, -7.0, 3.0], [-1.2, -1.5, -0.2, -0.3, -2.0, -0.4]])
    # garbage values after EOS (the critic still outputs numbers there)
    values = torch.tensor([[0.3, 0.2, 0.1, 5.0, -5.0, 9.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    beta, eos_idx = 0.1, 2
    for whiten in (False, True):
        kl, rewards, advantages, returns = rewards_and_advantages(logprobs, ref_logprobs, values, scores, mask,
                                                                  _settings(beta, whiten=whiten))
        out = {"kl": kl, "rewards": rewards, "advantages": advantages, "returns": returns}
        kl0 = logprobs[0] - ref_logprobs[0]
        # r_t = -β·kl_t on the response, the score added on the EOS token itself
        torch.testing.assert_close(rewards[0, :eos_idx], -beta * kl0[:eos_idx])
        assert rewards[0, eos_idx].item() == pytest.approx(2.0 - beta * kl0[eos_idx].item())
        # everything after EOS: no reward, no advantage, no return, no KL
        for name, tensor in out.items():
            assert tensor[0, eos_idx + 1 :].tolist() == [0.0, 0.0, 0.0], name
        # a truncated response gets its score on its last token
        kl1 = logprobs[1] - ref_logprobs[1]
        assert rewards[1, -1].item() == pytest.approx(-1.0 - beta * kl1[-1].item())
        torch.testing.assert_close(rewards[1, :-1], -beta * kl1[:-1])
    # no bootstrap past the EOS: the return there is its own reward (V after EOS = 0)
    assert returns[0, eos_idx].item() == pytest.approx(rewards[0, eos_idx].item())
    assert returns[1, -1].item() == pytest.approx(rewards[1, -1].item())
    # γ = 1: the return at t = 0 is the sum of rewards up to the EOS, λ-mixed with the values
    _, rewards, _, returns = rewards_and_advantages(logprobs, ref_logprobs, values, scores, mask, _settings(beta, lam=1.0))
    assert returns[0, 0].item() == pytest.approx(rewards[0, : eos_idx + 1].sum().item())


# ---------------------------------------------------------------- logprobs under temperature


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_policy_logprobs_match_a_plain_forward_pass(tiny_policy, tiny_model_dir, tiny_tokenizer, temperature):
    tok = tiny_tokenizer
    rollout = _rollout(tok, PROMPTS, _raw_responses(len(PROMPTS), 7))
    logprobs = policy_logprobs(tiny_policy, rollout, temperature)
    critic = _critic(tiny_model_dir, tok)
    with torch.no_grad():
        out = ActorCritic(tiny_policy, critic)(rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1], temperature)
    entropy = out.entropy
    torch.testing.assert_close(out.logprobs, logprobs, atol=0, rtol=0)  # the actor-critic's forward is the same forward
    assert logprobs.shape == entropy.shape == out.values.shape == rollout.response_ids.shape
    for b, prompt in enumerate(PROMPTS):  # one unpadded sequence at a time, default positions
        n = int(rollout.response_mask[b].sum())
        response = rollout.response_ids[b, :n]
        ids = torch.cat([torch.tensor(tok.encode(prompt)), response]).unsqueeze(0)
        with torch.no_grad():
            logits = tiny_policy(input_ids=ids).logits[0, -n - 1 : -1]
        logp = torch.log_softmax(logits / temperature, dim=-1)
        torch.testing.assert_close(logprobs[b, :n], logp.gather(1, response.unsqueeze(1)).squeeze(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(entropy[b, :n], -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=0)


def test_temperature_changes_the_logprobs(tiny_policy, tiny_tokenizer):
    rollout = _rollout(tiny_tokenizer, PROMPTS[:2], _raw_responses(2, 5))
    mask = rollout.response_mask.bool()
    a = policy_logprobs(tiny_policy, rollout, 0.7)
    b = policy_logprobs(tiny_policy, rollout, 1.0)
    assert (a[mask] - b[mask]).abs().max() > 1e-3


def test_extra_left_padding_does_not_change_logprobs_or_values(tiny_policy, tiny_model_dir, tiny_tokenizer):
    """position_ids come from the mask: the same prompt with more left pad gives the same numbers."""
    raw = _raw_responses(len(PROMPTS), 7)
    plain = _rollout(tiny_tokenizer, PROMPTS, raw)
    padded = _rollout(tiny_tokenizer, PROMPTS, raw, extra_left_pad=5)
    mask = plain.response_mask.bool()
    a = policy_logprobs(tiny_policy, plain, 0.7)
    b = policy_logprobs(tiny_policy, padded, 0.7)
    assert torch.isfinite(b[mask]).all()
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=0)

    model = ActorCritic(tiny_policy, _critic(tiny_model_dir, tiny_tokenizer))
    with torch.no_grad():
        va = model(plain.input_ids, plain.attention_mask, plain.query_ids.shape[1], 0.7).values
        vb = model(padded.input_ids, padded.attention_mask, padded.query_ids.shape[1], 0.7).values
    assert va.shape == plain.response_ids.shape
    torch.testing.assert_close(va[mask], vb[mask], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the first mini-batch is on-policy


def test_first_minibatch_ratio_is_exactly_one(tiny_policy, tiny_model_dir, tiny_tokenizer, fixed_backend):
    """N+ detail 6: dropout off and the same temperature everywhere -> ratio 1, clipfrac 0, approx_kl 0."""
    tok = tiny_tokenizer
    n, chunk, temperature = 8, 4, 0.7
    prompts = (PROMPTS * 2)[:n]
    batch = PromptCollator(tok.pad_token_id)([tok.encode(p) for p in prompts])
    rollout = sample_rollout(fixed_backend(torch.tensor(_raw_responses(n, 9, seed=1))), tok, prompts,
                             batch["input_ids"], batch["attention_mask"])
    reference = disable_dropout(type(tiny_policy).from_pretrained(tiny_model_dir)).eval()
    model = ActorCritic(tiny_policy, _critic(tiny_model_dir, tok))
    exp = make_experience(rollout, torch.zeros(n), model, reference, _settings(), temperature, contiguous_chunks(n, chunk))
    # reference == policy here, so the KL is exactly 0 too
    mask = exp.response_mask.bool()
    assert (exp.logprobs - exp.ref_logprobs)[mask].abs().max().item() == 0.0

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    mb = exp.select(perm[:chunk])
    model.train()  # ppo_update trains in train mode; dropout is 0 so it must not matter
    try:
        logprobs = model(mb.input_ids, mb.attention_mask, mb.query_ids.shape[1], temperature).logprobs.detach()
    finally:
        model.eval()
    mb_mask = mb.response_mask.float()
    dev = (logprobs - mb.logprobs)[mb_mask.bool()].abs().max().item()
    # Bit-for-bit on CPU (forward_rollout chunks like the update does); see experience.py docstring.
    assert dev == 0.0, f"first mini-batch logprobs differ from the rollout's by {dev}"
    advantages = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(0))
    _, stats = ppo_policy_loss(logprobs, mb.logprobs, advantages, mb_mask, clip_range=0.2)
    assert stats["clipfrac"] == 0.0
    assert stats["approx_kl"] == 0.0
    assert stats["ratio_mean"] == 1.0 and stats["ratio_max"] == 1.0


def test_forward_rollout_does_not_depend_on_chunk_size(tiny_policy, tiny_model_dir, tiny_tokenizer):
    tok = tiny_tokenizer
    model = ActorCritic(tiny_policy, _critic(tiny_model_dir, tok)).eval()
    results = []
    for chunk in (2, 6):
        rollout = _rollout(tok, PROMPTS, _raw_responses(len(PROMPTS), 6))
        results.append(make_experience(rollout, torch.zeros(len(PROMPTS)), model, tiny_policy, _settings(), 0.7,
                                       contiguous_chunks(len(PROMPTS), chunk)))
    mask = results[0].response_mask.bool()
    for name in ("logprobs", "ref_logprobs", "entropy", "values"):
        torch.testing.assert_close(getattr(results[0], name)[mask], getattr(results[1], name)[mask], atol=1e-5, rtol=0)


def test_experience_stats_by_hand():
    """2 episodes, Tr = 2, mask [[1, 1], [1, 0]]: 3 valid tokens; padding holds junk that must not count."""
    from rlhfkit.rollout.experience import experience_stats
    from rlhfkit.rollout.types import Experience

    t = torch.tensor
    zeros = torch.zeros(2, 2)
    exp = Experience(query_ids=torch.ones(2, 1, dtype=torch.long), query_mask=torch.ones(2, 1, dtype=torch.long),
                     response_ids=torch.ones(2, 2, dtype=torch.long), response_mask=t([[1, 1], [1, 0]]),
                     ended_with_eos=t([True, False]), prompts=["a", "b"], responses=["x", "y"],
                     logprobs=zeros, ref_logprobs=zeros, entropy=t([[1.0, 2.0], [3.0, 9.0]]),
                     values=t([[0.0, 1.0], [2.0, 5.0]]), scores=t([1.0, 3.0]), kl=t([[0.1, 0.2], [0.3, 0.0]]),
                     rewards=zeros, advantages=t([[1.0, -1.0], [2.0, 9.0]]), returns=t([[1.0, 1.0], [4.0, 7.0]]))
    stats = experience_stats(exp, kl_coef=0.5)
    expected = {
        "objective/kl": 0.3,  # Σ_t KL per episode: 0.3 and 0.3
        "objective/entropy": 3.0, "policy/entropy_avg": 2.0,  # per episode 3 and 3; per token 6 / 3
        "objective/scores": 2.0, "objective/scores_std": 2 ** 0.5,  # unbiased std of (1, 3)
        "objective/non_score_reward": -0.15, "objective/rlhf_reward": 1.85,  # −0.5 · 0.3
        "rollout/response_length": 1.5, "rollout/eos_fraction": 0.5, "rollout/generated_tokens": 3.0,
        "value/mean": 1.0,  # valid values 0, 1, 2
        "value/advantage_std": (14 / 9) ** 0.5,  # valid advantages 1, −1, 2: var = 2 − 4/9
        "value/explained_variance": 1 - (2 / 3) / 2,  # Var(R) of 1, 1, 4 = 2; Var(R − V) of 1, 0, 2 = 2/3
    }
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-6), key
