"""Masked reductions and whitening: hand-computed values and the HF-blog whitening target."""

import math

import pytest
import torch

from rlhfkit.algos.masked import masked_mean, masked_sum, masked_var, masked_whiten

# Target (a) of the literature notes (HF "N implementation details" blog).
X = torch.tensor([[1.2, 1.3, 1.4], [1.5, 1.6, 1.7], [1.8, 1.9, 2.0]])
ONES = torch.ones_like(X)
# mean = 1.6; squared deviations: 0.16, 0.09, 0.04, 0.01, 0, 0.01, 0.04, 0.09, 0.16 (sum 0.6)
# biased var = 0.6 / 9 = 0.0667, std = 0.2582; (1.2 - 1.6) / 0.2582 + 1.6 = 0.0508
WHITENED_BIASED = torch.tensor(
    [[0.0508, 0.4381, 0.8254], [1.2127, 1.6000, 1.9873], [2.3746, 2.7619, 3.1492]]
)
# unbiased var = 0.6 / 8 = 0.075, std = 0.2739; (1.2 - 1.6) / 0.2739 + 1.6 = 0.1394
FIRST_ROW_UNBIASED = torch.tensor([0.1394, 0.5046, 0.8697])


def test_sum_and_mean_hand_values():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_sum(x, mask).item() == 7.0  # 1 + 2 + 4
    assert masked_mean(x, mask).item() == pytest.approx(7.0 / 3)
    torch.testing.assert_close(masked_sum(x, mask, dim=1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([2.5, 2.0, 0.0]))
    # bool and float masks are the same thing
    assert masked_mean(x, mask.bool()).item() == masked_mean(x, mask.float()).item()


def test_empty_mask_gives_zero_not_nan():
    x = torch.randn(2, 3)
    zero = torch.zeros(2, 3)
    assert masked_mean(x, zero).item() == 0.0
    assert torch.equal(masked_mean(x, zero, dim=1), torch.zeros(2))
    assert masked_var(x, zero).item() == 0.0
    assert masked_var(x, zero, unbiased=True).item() == 0.0
    assert not torch.isnan(masked_whiten(x, zero)).any()


def test_nan_and_inf_in_padding_do_not_leak():
    x = torch.tensor([1.0, 3.0, float("nan"), float("inf")])
    mask = torch.tensor([1, 1, 0, 0])
    assert masked_sum(x, mask).item() == 4.0
    assert masked_mean(x, mask).item() == 2.0
    assert masked_var(x, mask).item() == 1.0  # deviations -1, +1 -> (1 + 1) / 2


def test_var_biased_and_unbiased():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # mean 2; squared deviations 1, 0, 1 -> sum 2; biased 2/3, unbiased 2/2
    assert masked_var(x, mask).item() == pytest.approx(2.0 / 3, abs=1e-6)
    assert masked_var(x, mask, unbiased=True).item() == pytest.approx(1.0, abs=1e-6)


def test_mask_shape_must_match():
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(torch.zeros(2, 3), torch.ones(3))


def test_whiten_reference_matrix_biased():
    out = masked_whiten(X, ONES, shift_mean=False)
    torch.testing.assert_close(out, WHITENED_BIASED, rtol=0, atol=1e-4)


def test_whiten_reference_first_row_unbiased():
    out = masked_whiten(X, ONES, shift_mean=False, unbiased=True)
    torch.testing.assert_close(out[0], FIRST_ROW_UNBIASED, rtol=0, atol=1e-4)


def test_whiten_shift_mean_gives_zero_mean_unit_var():
    out = masked_whiten(X, ONES)
    assert masked_mean(out, ONES).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(out, ONES).item() == pytest.approx(1.0, abs=1e-5)
    # shift_mean=False is the same values with the mean (1.6) added back
    torch.testing.assert_close(out + 1.6, masked_whiten(X, ONES, shift_mean=False))


def test_whiten_partial_mask_ignores_padding():
    # Row 0 has 3 valid values, row 1 has 1; the padding holds huge values that
    # would dominate the statistics if they were counted.
    x = torch.tensor([[1.0, 2.0, 3.0, 1e6], [5.0, -1e6, 7e5, 3e4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    valid = torch.tensor([1.0, 2.0, 3.0, 5.0])
    # mean 11/4 = 2.75; deviations -1.75, -0.75, 0.25, 2.25 -> squares 3.0625, 0.5625,
    # 0.0625, 5.0625 -> sum 8.75, biased var 2.1875, std 1.47902
    expected_valid = (valid - 2.75) / math.sqrt(2.1875)
    out = masked_whiten(x, mask)
    torch.testing.assert_close(out[mask.bool()], expected_valid, rtol=1e-5, atol=1e-5)
    # the same valid entries with different padding give the same result
    x2 = x.clone()
    x2[~mask.bool()] = torch.tensor([-3.0, 0.0, 9.0, 2.5])
    torch.testing.assert_close(masked_whiten(x2, mask)[mask.bool()], out[mask.bool()])


def test_broken_variant_unbiased_whitening_misses_target():
    """A whitening that silently uses the unbiased variance must fail the biased target."""

    def broken_whiten(x, mask):
        m = mask.bool()
        return (x - x[m].mean()) / torch.sqrt(x[m].var(unbiased=True) + 1e-8) + x[m].mean()

    out = broken_whiten(X, ONES)
    assert not torch.allclose(out, WHITENED_BIASED, rtol=0, atol=1e-4)
    # and a masked mean that multiplies by the mask lets padding NaNs through
    x = torch.tensor([1.0, float("nan")])
    mask = torch.tensor([1.0, 0.0])
    assert torch.isnan((x * mask).sum() / mask.sum())
    assert masked_mean(x, mask).item() == 1.0
