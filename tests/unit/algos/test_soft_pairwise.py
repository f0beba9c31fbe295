"""The Bradley–Terry loss with soft targets (people's votes), on hand-computed numbers."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.algos.losses import pairwise_loss

# -log sigma(1) = 0.3132617, -log sigma(-1) = 1.3132617, sigma(1) = 0.7310586


def test_soft_target_hand_value():
    # d = 1, p = 0.75: 0.75 * 0.3132617 + 0.25 * 1.3132617 = 0.2349463 + 0.3283154 = 0.5632617
    # (identity: -p log s(d) - (1-p) log s(-d) = -log s(d) + (1 - p) d = 0.3132617 + 0.25)
    loss, _ = pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0]), target=torch.tensor([0.75]))
    assert loss.item() == pytest.approx(0.5632617, abs=1e-6)


def test_soft_target_gradient_vanishes_where_sigma_d_equals_p():
    # dL/dd = sigma(d) - p: at d = 1, p = 0.75 it is 0.7310586 - 0.75 = -0.0189414;
    # at d = log(p / (1 - p)) = log 3 it is 0.
    d = torch.tensor([1.0, math.log(3.0)], requires_grad=True)
    loss, _ = pairwise_loss(d, torch.zeros(2), target=torch.tensor([0.75, 0.75]))
    loss.backward()
    assert d.grad.tolist() == pytest.approx([-0.0189414 / 2, 0.0], abs=1e-6)  # mean over 2 pairs


def test_target_one_is_the_hard_loss_and_half_at_zero_is_ln2():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    hard, _ = pairwise_loss(chosen, rejected)
    soft, _ = pairwise_loss(chosen, rejected, target=torch.ones(2))
    assert soft.item() == pytest.approx(hard.item(), abs=1e-7) == pytest.approx(0.8132617, abs=1e-6)
    tie, _ = pairwise_loss(torch.zeros(1), torch.zeros(1), target=torch.tensor([0.5]))
    assert tie.item() == pytest.approx(math.log(2), abs=1e-6)


def test_soft_target_with_label_smoothing():
    # p' = 0.75 (1 - 0.1) + 0.25 * 0.1 = 0.7; loss = 0.3132617 + (1 - 0.7) * 1 = 0.6132617
    loss, _ = pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0]), label_smoothing=0.1, target=torch.tensor([0.75]))
    assert loss.item() == pytest.approx(0.6132617, abs=1e-6)


def test_broken_variant_with_the_target_swapped_fails():
    """A loss that weights log sigma(d) by 1 - p (the target of the rejected side) is caught."""
    def broken(chosen, rejected, p):
        d = chosen - rejected
        return (-(1 - p) * F.logsigmoid(d) - p * F.logsigmoid(-d)).mean()

    value = broken(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.75])).item()
    assert value == pytest.approx(1.0632617, abs=1e-6)  # 0.3132617 + 0.75
    assert value != pytest.approx(0.5632617, abs=1e-6)
    real, _ = pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0]), target=torch.tensor([0.75]))
    assert real.item() != pytest.approx(value, abs=1e-3)  # the real loss is not the swapped one
