"""Reward-model, SFT, PPO policy and value losses on hand-computed numbers."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.algos.losses import pairwise_loss, ppo_policy_loss, reward_centering_loss, sft_loss, value_loss

# -log sigma(d) = log(1 + e^-d):  d = 1 -> 0.3132617,  d = -1 -> 1.3132617,
#                                 d = 0.5 -> 0.4740770, d = -1.5 -> 1.7014133


def test_pairwise_equal_rewards_is_ln2():
    r = torch.tensor([0.3, -1.0, 2.0])
    loss, stats = pairwise_loss(r, r.clone())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # 0.6931
    assert stats["accuracy"] == 0.0  # strict r_c > r_r: ties count as wrong
    assert stats["margin"] == 0.0
    assert all(isinstance(v, float) for v in stats.values())


def test_pairwise_hand_values():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    # d = [1, -1] -> losses [0.3132617, 1.3132617] -> mean 0.8132617
    loss, stats = pairwise_loss(chosen, rejected)
    assert loss.item() == pytest.approx(0.8132617, abs=1e-6)
    assert stats["accuracy"] == 0.5
    assert stats["margin"] == 0.0  # mean(r_c - r_r) = mean(1, -1)


def test_pairwise_margin_shifts_difference():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    # d = [1 - 0.5, -1 - 0.5] = [0.5, -1.5] -> losses [0.4740770, 1.7014133] -> mean 1.0877451
    loss, stats = pairwise_loss(chosen, rejected, margin=torch.tensor([0.5, 0.5]))
    assert loss.item() == pytest.approx(1.0877451, abs=1e-6)
    assert stats["margin"] == 0.0  # the stat is the raw reward gap, without the margin


def test_pairwise_label_smoothing():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    # d = 1, eps = 0.1: 0.9 * 0.3132617 + 0.1 * 1.3132617 = 0.2819355 + 0.1313262 = 0.4132617
    # (identity: -(1-eps) log s(d) - eps log s(-d) = -log s(d) + eps * d = 0.3132617 + 0.1)
    loss, _ = pairwise_loss(chosen, rejected, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.4132617, abs=1e-6)
    with pytest.raises(ValueError):
        pairwise_loss(chosen, rejected, label_smoothing=0.7)


def test_reward_centering_loss():
    # sums [1 + 0.5, -2 + 1] = [1.5, -1] -> squares [2.25, 1] -> mean 1.625
    loss = reward_centering_loss(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0]))
    assert loss.item() == pytest.approx(1.625, abs=1e-6)


def test_sft_loss_hand_values_and_ignore_index():
    # Vocabulary of 2. logits at t predict labels at t + 1.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]]], requires_grad=True)
    labels = torch.tensor([[0, 1, 0]])
    # t=0 predicts label 1 with p = 3/4: -ln 0.75 = 0.2876821
    # t=1 predicts label 0 with p = 1/2: ln 2 = 0.6931472; t=2 predicts nothing
    assert sft_loss(logits, labels).item() == pytest.approx((0.2876821 + 0.6931472) / 2, abs=1e-6)

    ignored = torch.tensor([[0, 1, -100]])
    loss = sft_loss(logits, ignored)
    assert loss.item() == pytest.approx(0.2876821, abs=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[0, 1], torch.zeros(2))  # the ignored target's logits get no gradient
    assert torch.equal(logits.grad[0, 2], torch.zeros(2))  # the last position predicts nothing
    # arbitrary logits at the ignored position leave the loss unchanged
    changed = logits.detach().clone()
    changed[0, 1] = torch.tensor([40.0, -7.0])
    assert sft_loss(changed, ignored).item() == loss.item()


def test_sft_loss_matches_cross_entropy_and_empty_is_zero():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, generator=g)
    labels = torch.tensor([[1, 2, 3, -100], [-100, 4, 0, 1]])
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 5), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(sft_loss(logits, labels), expected)
    assert sft_loss(logits, torch.full((2, 4), -100)).item() == 0.0


# Crafted PPO case, eps = 0.2: logratio [0.5, 0, -0.5], A = [1, -1, 1], 4th token padding.
LOGRATIO = torch.tensor([[0.5, 0.0, -0.5, 3.0]])
ADV = torch.tensor([[1.0, -1.0, 1.0, 10.0]])
MASK = torch.tensor([[1, 1, 1, 0]])
# t0: ratio e^0.5 = 1.6487213; unclipped -1 * 1.6487 = -1.6487; clipped -1 * 1.2 = -1.2
#     max = -1.2 (clipped wins -> clipping active, no gradient)
# t1: ratio 1; unclipped -(-1) * 1 = 1; clipped 1; max = 1 (tie: not counted as clipped)
# t2: ratio e^-0.5 = 0.6065307; unclipped -0.6065307; clipped -1 * 0.8 = -0.8
#     max = -0.6065307 (unclipped wins: a positive advantage is not clipped from below)
# loss = (-1.2 + 1 - 0.6065307) / 3 = -0.2688436
PG_LOSS = -0.2688436


def test_ppo_policy_loss_crafted_ratios():
    old = torch.zeros(1, 4)
    logprobs = LOGRATIO.clone().requires_grad_(True)
    loss, stats = ppo_policy_loss(logprobs, old, ADV, MASK, clip_range=0.2)
    assert loss.item() == pytest.approx(PG_LOSS, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(1 / 3, abs=1e-6)  # only t0
    # approx_kl = mean(0.5 * [0.25, 0, 0.25]) = 0.25 / 3 = 0.0833333
    assert stats["approx_kl"] == pytest.approx(0.0833333, abs=1e-6)
    # ratio_mean = (1.6487213 + 1 + 0.6065307) / 3 = 1.0850840; ratio_max = e^0.5 (pad's e^3 ignored)
    assert stats["ratio_mean"] == pytest.approx(1.0850840, abs=1e-6)
    assert stats["ratio_max"] == pytest.approx(1.6487213, abs=1e-6)
    # d loss / d logprob_t = -A_t * ratio_t / 3 where unclipped wins, 0 where clipping is active:
    # t0 -> 0; t1 -> 1/3 = 0.3333333; t2 -> -0.6065307 / 3 = -0.2021769; pad -> 0
    loss.backward()
    torch.testing.assert_close(
        logprobs.grad, torch.tensor([[0.0, 0.3333333, -0.2021769, 0.0]]), rtol=0, atol=1e-6
    )


def test_ppo_first_minibatch_ratio_is_one():
    g = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(2, 5, generator=g)
    adv = torch.randn(2, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    loss, stats = ppo_policy_loss(logprobs, logprobs.clone(), adv, mask, 0.2)
    assert stats == {"clipfrac": 0.0, "approx_kl": 0.0, "ratio_mean": 1.0, "ratio_max": 1.0}
    # with ratio 1 the loss is -mean(A) over valid tokens
    assert loss.item() == pytest.approx(-adv[mask.bool()].mean().item(), abs=1e-6)


def test_broken_variant_ppo_with_min_instead_of_max():
    """Taking the min of the losses (the optimistic bound) must miss the hand value."""
    ratio = LOGRATIO.exp()
    unclipped, clipped = -ADV * ratio, -ADV * ratio.clamp(0.8, 1.2)
    wrong = torch.minimum(unclipped, clipped)[MASK.bool()].mean().item()
    # min picks [-1.6487, 1, -0.8] -> -0.4829, not -0.2688
    assert wrong != pytest.approx(PG_LOSS, abs=1e-3)


def test_value_loss_hand_values():
    values = torch.tensor([[1.0, 0.0, 2.0, 50.0]])
    old_values = torch.tensor([[0.5, 0.5, 2.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 1.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # t0: (1 - 2)^2 = 1; clipped v = 0.5 + clamp(0.5, +-0.2) = 0.7 -> (0.7 - 2)^2 = 1.69; max 1.69 (clipped)
    # t1: (0 - 0)^2 = 0; clipped v = 0.5 - 0.2 = 0.3 -> 0.09; max 0.09 (clipped, though v was on target)
    # t2: (2 - 1)^2 = 1; clipped v = 2.0 -> 1; max 1 (tie, not clipped)
    # loss = 0.5 * (1.69 + 0.09 + 1) / 3 = 0.5 * 0.9266667 = 0.4633333; clipfrac 2/3
    loss, stats = value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.4633333, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(2 / 3, abs=1e-6)
    # no clipping: 0.5 * (1 + 0 + 1) / 3 = 0.3333333
    loss, stats = value_loss(values, old_values, returns, mask, clip_range_value=None)
    assert loss.item() == pytest.approx(0.3333333, abs=1e-6)
    assert stats["clipfrac"] == 0.0
