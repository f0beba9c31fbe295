"""Per-token rewards and GAE on hand-computed examples."""

import pytest
import torch

from rlhfkit.algos.advantages import compute_gae, token_level_rewards


def test_token_level_rewards_hand_values():
    kl = torch.tensor(
        [
            [0.1, 0.2, 0.3, 99.0],  # 3 response tokens, EOS at index 2, then padding
            [0.5, 0.6, 99.0, 99.0],  # 2 response tokens
            [99.0, 99.0, 99.0, 99.0],  # empty response
        ]
    )
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    scores = torch.tensor([1.0, 2.0, 5.0])
    rewards = token_level_rewards(scores, kl, kl_coef=0.5, response_mask=mask)
    expected = torch.tensor(
        [
            # -0.5 * [0.1, 0.2, 0.3] = [-0.05, -0.1, -0.15]; score 1.0 added at index 2
            [-0.05, -0.1, -0.15 + 1.0, 0.0],
            # -0.5 * [0.5, 0.6] = [-0.25, -0.3]; score 2.0 added at index 1
            [-0.25, -0.3 + 2.0, 0.0, 0.0],
            # no valid token: no score, no penalty
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(rewards, expected)
    # the score is on the EOS token itself, not on the first pad after it (TRL's placement)
    assert rewards[0, 3].item() == 0.0


def test_token_level_rewards_full_length_row_and_bool_mask():
    kl = torch.tensor([[1.0, 1.0]])
    rewards = token_level_rewards(torch.tensor([3.0]), kl, 0.1, torch.tensor([[True, True]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, -0.1 + 3.0]]))


# Hand example: one row of 3 tokens, gamma = 0.9, lam = 0.8 (gamma * lam = 0.72).
REWARDS = torch.tensor([[0.1, -0.2, 1.0]])
VALUES = torch.tensor([[0.5, 0.4, 0.3]])
# delta_2 = 1.0 + 0.9 * 0 - 0.3          =  0.7     (V after the last token is 0)
# delta_1 = -0.2 + 0.9 * 0.3 - 0.4       = -0.33
# delta_0 = 0.1 + 0.9 * 0.4 - 0.5        = -0.04
# A_2 = 0.7
# A_1 = -0.33 + 0.72 * 0.7   = -0.33 + 0.504   = 0.174
# A_0 = -0.04 + 0.72 * 0.174 = -0.04 + 0.12528 = 0.08528
ADVANTAGES = torch.tensor([[0.08528, 0.174, 0.7]])
# returns = A + V = [0.58528, 0.574, 1.0]
RETURNS = torch.tensor([[0.58528, 0.574, 1.0]])


def test_gae_hand_computed():
    adv, ret = compute_gae(REWARDS, VALUES, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, ADVANTAGES, rtol=0, atol=1e-6)
    torch.testing.assert_close(ret, RETURNS, rtol=0, atol=1e-6)


def _padded(row: torch.Tensor, pad_values: list) -> torch.Tensor:
    return torch.cat([row, torch.tensor([pad_values])], dim=1)


def test_gae_padding_does_not_change_result():
    # Same 3 tokens followed by 3 pads holding garbage (even NaN) rewards and values.
    rewards = _padded(REWARDS, [7.0, float("nan"), -3.0])
    values = _padded(VALUES, [100.0, -50.0, float("inf")])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv[:, :3], ADVANTAGES, rtol=0, atol=1e-6)
    torch.testing.assert_close(ret[:, :3], RETURNS, rtol=0, atol=1e-6)
    assert torch.equal(adv[:, 3:], torch.zeros(1, 3))
    assert torch.equal(ret[:, 3:], torch.zeros(1, 3))


def test_gae_batch_rows_are_independent():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    lengths = [5, 2, 0]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.95, lam=0.9)
    for b, n in enumerate(lengths):
        if n == 0:
            assert torch.equal(adv[b], torch.zeros(5))
            continue
        a1, r1 = compute_gae(rewards[b : b + 1, :n], values[b : b + 1, :n], torch.ones(1, n), 0.95, 0.9)
        torch.testing.assert_close(adv[b, :n], a1[0])
        torch.testing.assert_close(ret[b, :n], r1[0])


def test_gamma_lam_one_gives_reward_to_go():
    # With gamma = lam = 1 the deltas telescope: A_t = sum_{k>=t} r_k - V_t, so the
    # returns are the sum of future rewards whatever the values are.
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0]])
    values = torch.tensor([[0.3, -1.0, 2.5, 0.7, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # reward-to-go over the 4 valid tokens: [10, 9, 7, 4], 0 on the pad
    torch.testing.assert_close(ret, torch.tensor([[10.0, 9.0, 7.0, 4.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[9.7, 10.0, 4.5, 3.3, 0.0]]))


def test_mask_with_hole_is_rejected():
    with pytest.raises(ValueError, match="contiguous"):
        compute_gae(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([[1, 0, 1, 0]]), 1.0, 0.95)
    # leading zeros (a query segment) followed by one run are fine
    compute_gae(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([[0, 1, 1, 0]]), 1.0, 0.95)


def test_broken_variant_gae_without_mask_bootstraps_from_padding():
    """GAE that ignores the mask reads V of the first pad as V_{t+1}; it must miss the target."""

    def gae_no_mask(rewards, values, gamma, lam):
        T = rewards.shape[1]
        last, out = torch.zeros(rewards.shape[0]), []
        for t in reversed(range(T)):
            next_v = values[:, t + 1] if t + 1 < T else torch.zeros(rewards.shape[0])
            last = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * last
            out.append(last)
        return torch.stack(out[::-1], 1)

    rewards = _padded(REWARDS, [0.0, 0.0])
    values = _padded(VALUES, [2.0, 2.0])  # the critic's outputs on pads are not zero
    wrong = gae_no_mask(rewards, values, 0.9, 0.8)
    assert not torch.allclose(wrong[:, :3], ADVANTAGES, rtol=0, atol=1e-4)
    adv, _ = compute_gae(rewards, values, torch.tensor([[1, 1, 1, 0, 0]]), 0.9, 0.8)
    torch.testing.assert_close(adv[:, :3], ADVANTAGES, rtol=0, atol=1e-6)
