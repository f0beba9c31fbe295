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
