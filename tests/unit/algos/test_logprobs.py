"""Per-token logprobs and entropies against hand values and torch.distributions."""

import math

import pytest
import torch

from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits


def test_logprobs_hand_values():
    # logits [0, ln 3] -> softmax [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (1, 2, 2)
    labels = torch.tensor([[1, 0]])
    expected = torch.tensor([[math.log(0.75), math.log(0.25)]])
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)


def test_temperature_divides_logits_before_softmax():
    # T = 2: logits become [0, ln 3 / 2] = [0, ln sqrt(3)] -> p(1) = sqrt(3) / (1 + sqrt(3)) = 0.63397
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    labels = torch.tensor([[1]])
    out = logprobs_from_logits(logits, labels, temperature=2.0)
    assert out.item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))), abs=1e-6)


def test_broken_variant_temperature_after_log_softmax():
    """Dividing the log-probabilities (not the logits) by T must miss the same target."""
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    target = math.log(math.sqrt(3) / (1 + math.sqrt(3)))  # -0.4561
    wrong = (torch.log_softmax(logits, -1)[..., 1] / 2.0).item()  # ln(0.75) / 2 = -0.1438
    assert wrong != pytest.approx(target, abs=1e-2)
    assert logprobs_from_logits(logits, torch.tensor([[1]]), 2.0).item() == pytest.approx(target, abs=1e-6)


def test_matches_categorical_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g) * 3
    labels = torch.randint(0, 7, (2, 3), generator=g)
    dist = torch.distributions.Categorical(logits=logits / 0.7)
    torch.testing.assert_close(logprobs_from_logits(logits, labels, 0.7), dist.log_prob(labels))
    torch.testing.assert_close(entropy_from_logits(logits, 0.7), dist.entropy())


def test_bfloat16_is_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 3, 11, generator=g) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 11, (2, 3), generator=g)
    out = logprobs_from_logits(logits, labels, 0.7)
    assert out.dtype == torch.float32
    ref = logprobs_from_logits(logits.float(), labels, 0.7)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert entropy_from_logits(logits).dtype == torch.float32


def test_entropy_hand_values():
    uniform = torch.zeros(1, 1, 4)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(4), abs=1e-6)
    # softmax [1/4, 3/4]: H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.34657 + 0.21576 = 0.56233
    two = torch.tensor([[[0.0, math.log(3.0)]]])
    assert entropy_from_logits(two).item() == pytest.approx(0.562335, abs=1e-5)
    # -inf logits (filtered vocabulary) contribute 0, not NaN: same as the 2-way case
    masked = torch.tensor([[[0.0, math.log(3.0), float("-inf")]]])
    assert entropy_from_logits(masked).item() == pytest.approx(0.562335, abs=1e-5)
    # a higher temperature flattens the distribution
    assert entropy_from_logits(two, temperature=5.0).item() > entropy_from_logits(two).item()


def test_bad_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        logprobs_from_logits(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), temperature=0.0)


# ---------------------------------------------------------------------------------- logprobs_and_entropy

from rlhfkit.algos import logprobs as logprobs_module  # noqa: E402
from rlhfkit.algos.logprobs import logprobs_and_entropy  # noqa: E402

LN2 = math.log(2.0)


def _quarter_quarter_half(temperature: float = 1.0) -> torch.Tensor:
    # logits / T = [0, 0, ln 2] -> softmax [1/4, 1/4, 1/2], entropy 1.5 ln 2
    return (torch.tensor([[[0.0, 0.0, LN2]]], dtype=torch.float64) * temperature).requires_grad_(True)


def test_fused_hand_values_and_logprob_gradient():
    for temperature in (1.0, 2.0):
        logits = _quarter_quarter_half(temperature)
        logp, entropy = logprobs_and_entropy(logits, torch.tensor([[2]]), temperature)
        torch.testing.assert_close(logp, torch.tensor([[math.log(0.5)]], dtype=torch.float64))
        torch.testing.assert_close(entropy, torch.tensor([[1.5 * LN2]], dtype=torch.float64))
        logp.sum().backward()
        # d log p_2 / d z = onehot(2) − p = [−1/4, −1/4, 1/2], and z = logits / T
        expected = torch.tensor([[[-0.25, -0.25, 0.5]]], dtype=torch.float64) / temperature
        torch.testing.assert_close(logits.grad, expected)


def test_fused_entropy_gradient_by_hand():
    # dH/dz_j = −p_j (log p_j + H): p = [1/4, 1/4, 1/2], H = 1.5 ln 2
    # j = 0, 1: −1/4 · (−2 ln 2 + 1.5 ln 2) = ln 2 / 8;   j = 2: −1/2 · (−ln 2 + 1.5 ln 2) = −ln 2 / 4
    logits = _quarter_quarter_half()
    _, entropy = logprobs_and_entropy(logits, torch.tensor([[0]]), 1.0, entropy_grad=True)
    entropy.sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[[LN2 / 8, LN2 / 8, -LN2 / 4]]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_matches_the_reference_functions_across_chunks(monkeypatch, dtype, temperature):
    """Values and gradients as `logprobs_from_logits` + `entropy_from_logits` under autograd, with
    chunks of 2 rows so that 15 rows take 8 chunks (the last one short)."""
    monkeypatch.setattr(logprobs_module, "_CHUNK_ELEMENTS", 2 * 11)
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11, dtype=dtype)).requires_grad_(True)
    labels = torch.randint(0, 11, (3, 5))
    w_logp, w_entropy = torch.randn(3, 5, dtype=dtype), torch.randn(3, 5, dtype=dtype)
    logp, entropy = logprobs_and_entropy(logits, labels, temperature)
    ref_logp, ref_entropy = logprobs_from_logits(logits, labels, temperature), entropy_from_logits(logits, temperature)
    torch.testing.assert_close(logp, ref_logp, rtol=0, atol=0)  # the same formula, bit for bit
    torch.testing.assert_close(entropy, ref_entropy)
    grad, = torch.autograd.grad((logp * w_logp).sum() + (entropy * w_entropy).sum(), logits)
    ref_grad, = torch.autograd.grad((ref_logp * w_logp).sum() + (ref_entropy * w_entropy).sum(), logits)
    torch.testing.assert_close(grad, ref_grad)


def test_fused_gradcheck():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (2, 3))
    assert torch.autograd.gradcheck(lambda z: logprobs_and_entropy(z, labels, 0.7, True), (logits,))


def test_fused_entropy_without_gradient_is_a_statistic():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    logp, entropy = logprobs_and_entropy(logits, torch.zeros(2, 3, dtype=torch.long), 1.0, entropy_grad=False)
    assert logp.requires_grad and not entropy.requires_grad
    (logp.sum()).backward()
    p = torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, torch.nn.functional.one_hot(torch.zeros(2, 3, dtype=torch.long), 5) - p)


def test_fused_filtered_tokens_and_bfloat16():
    logits = torch.tensor([[[0.0, float("-inf"), LN2, 0.0]]], requires_grad=True)  # a filtered token
    logp, entropy = logprobs_and_entropy(logits, torch.tensor([[2]]), 1.0)
    torch.testing.assert_close(entropy, torch.tensor([[1.5 * LN2]]))
    (logp + entropy).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, 1] == 0
    low = torch.randn(2, 4, 9).bfloat16()
    labels = torch.randint(0, 9, (2, 4))
    logp, entropy = logprobs_and_entropy(low, labels, 0.7)
    assert logp.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(logp, logprobs_from_logits(low, labels, 0.7))
    torch.testing.assert_close(entropy, entropy_from_logits(low, 0.7))
