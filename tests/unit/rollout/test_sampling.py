"""rollout/sampling.py: inverse-CDF temperature sampling, by hand and against softmax(z / T).

Hand values (exact in binary, so the boundaries are exact): probs (0.25, 0.5, 0.25) have the
cumulative sums (0.25, 0.75, 1.0), so u ∈ [0, 0.25) picks token 0, [0.25, 0.75) token 1 and
[0.75, 1) token 2.
"""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config.stages import GenerationSection
from rlhfkit.rollout.generation import HFGenerationBackend
from rlhfkit.rollout.sampling import InverseCDFSampler, generate_kwargs, inverse_cdf_pick, sample_from_logits


def _pick(probs: list[float], u: float) -> int:
    return int(inverse_cdf_pick(torch.tensor([probs]), torch.tensor([u]))[0])


@pytest.mark.parametrize("u, token", [(0.0, 0), (0.2499, 0), (0.25, 1), (0.7499, 1), (0.75, 2), (0.9999, 2)])
def test_pick_follows_the_cumulative_sums(u, token):
    assert _pick([0.25, 0.5, 0.25], u) == token


def test_pick_never_takes_a_zero_probability_token():
    assert _pick([0.5, 0.0, 0.5], 0.5) == 2  # the empty interval of token 1 is skipped
    assert _pick([0.0, 1.0], 0.0) == 1
    # u x total rounding up to the total would land past the end: the last token with mass instead
    assert _pick([0.5, 0.5, 0.0], 1.0) == 1


def test_pick_needs_no_normalisation():
    assert _pick([1.0, 2.0, 1.0], 0.7) == 1
    assert _pick([1.0, 2.0, 1.0], 0.8) == 2


def test_samples_follow_softmax_at_the_temperature():
    """200 000 draws over 4 tokens: each frequency within 5 standard errors of softmax(z / 0.7)."""
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    n = 200_000
    drawn = sample_from_logits(logits.expand(n, 4), temperature=0.7)
    freq = torch.bincount(drawn, minlength=4).double() / n
    expected = torch.softmax(logits.double() / 0.7, 0)
    stderr = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() < 5 * stderr).all(), (freq, expected)
    at_one = torch.softmax(logits.double(), 0)  # the same draws are far from the T = 1 distribution
    assert ((freq - at_one).abs() > 10 * stderr).any()


def test_processor_leaves_only_the_drawn_token():
    torch.manual_seed(1)
    scores = torch.randn(3, 7)
    out = InverseCDFSampler(1.0)(torch.zeros(3, 1, dtype=torch.long), scores)
    assert (out == 0).sum(1).tolist() == [1, 1, 1]
    assert torch.isinf(out).sum().item() == 3 * 6


def test_generate_kwargs_keeps_generates_sampler_for_top_k_and_top_p():
    assert generate_kwargs(0.7, 0, 1.0)["do_sample"] is False
    assert generate_kwargs(0.7, None, None)["do_sample"] is False
    assert generate_kwargs(0.7, 10, 1.0) == {"do_sample": True, "temperature": 0.7, "top_k": 10, "top_p": 1.0}
    assert generate_kwargs(0.7, 0, 0.9)["do_sample"] is True


def test_hf_backend_first_token_follows_the_models_softmax(tiny_policy, tiny_tokenizer):
    """Through `generate`: the first sampled token of 4 000 copies of one prompt is distributed as
    softmax(logits / T) of the model's forward (total variation small; a wrong temperature or a
    sampler that ignored the processor's scores would give a large one). T = 0.1 because the
    random-init model is nearly uniform at T = 1, where no temperature error would show."""
    tok = tiny_tokenizer
    query = torch.tensor([tok.encode("the quick")] * 4000)
    backend = HFGenerationBackend(tiny_policy, tok, GenerationSection(temperature=0.1, top_k=0, max_new_tokens=1))
    torch.manual_seed(0)
    first = backend.generate(query, torch.ones_like(query))[:, 0]
    with torch.no_grad():
        logits = tiny_policy(input_ids=query[:1]).logits[0, -1]
    vocab = logits.shape[0]
    freq = torch.bincount(first, minlength=vocab).double() / len(first)
    expected = torch.softmax(logits.double() / 0.1, 0)
    tv = 0.5 * (freq - expected).abs().sum().item()
    at_one = 0.5 * (freq - torch.softmax(logits.double(), 0)).abs().sum().item()
    print(f"total variation {tv:.3f} at T = 0.1, {at_one:.3f} against T = 1")
    assert tv < 0.12, tv
    assert at_one > tv + 0.05, (at_one, tv)
