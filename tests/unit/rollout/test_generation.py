"""Sampling: truncation after EOS, packaging a Rollout, and what the HF sampler really samples from."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from rlhfkit.config.stages import GenerationSection
from rlhfkit.models.load import disable_dropout
from rlhfkit.models.scoring import position_ids_from_mask
from rlhfkit.rollout.generation import HFGenerationBackend, sample_rollout, truncate_after_eos

EOS, PAD = 0, 1  # the tiny tokenizer's ids (checked in test_tiny_tokenizer_ids)


def test_tiny_tokenizer_ids(tiny_tokenizer):
    assert (tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id) == (EOS, PAD)


# ---------------------------------------------------------------- truncate_after_eos


def test_truncate_after_eos_middle_last_absent():
    raw = torch.tensor(
        [
            [5, 6, EOS, 7, 8],  # EOS in the middle: 7, 8 (sampled after it) become pad
            [5, 6, 7, 8, EOS],  # EOS at the last position
            [5, 6, 7, 8, 9],  # no EOS: ran out of budget
            [EOS, 5, EOS, 6, 7],  # EOS first: only the first EOS counts
        ]
    )
    ids, mask, ended = truncate_after_eos(raw, EOS, PAD)
    assert ids.tolist() == [
        [5, 6, EOS, PAD, PAD],
        [5, 6, 7, 8, EOS],
        [5, 6, 7, 8, 9],
        [EOS, PAD, PAD, PAD, PAD],
    ]
    assert mask.tolist() == [  # the EOS itself is a valid (masked-in) token
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
    ]
    assert ended.tolist() == [True, True, False, True]
    assert ended.dtype == torch.bool


def test_truncate_after_eos_keeps_a_sampled_pad_before_eos():
    # The policy sampled the pad id as an ordinary token: it is an action, not padding.
    raw = torch.tensor([[5, PAD, 6, EOS, 7], [PAD, PAD, 5, 6, 7]])
    ids, mask, ended = truncate_after_eos(raw, EOS, PAD)
    assert ids.tolist() == [[5, PAD, 6, EOS, PAD], [PAD, PAD, 5, 6, 7]]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def test_truncate_after_eos_already_padded_output():
    # What HF generate returns when it stops at EOS: pads already follow the EOS.
    raw = torch.tensor([[5, EOS, PAD, PAD], [5, 6, 7, EOS]])
    ids, mask, ended = truncate_after_eos(raw, EOS, PAD)
    assert ids.tolist() == raw.tolist()
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, True]


# ---------------------------------------------------------------- sample_rollout


def test_sample_rollout_packages_fixed_length_generation(tiny_tokenizer, fixed_backend):
    """Fixed-length sampling (N+ detail 14): text and tokens after the first EOS are dropped."""
    tok = tiny_tokenizer
    good, bad = tok.encode(" good luck"), tok.encode(" rain")
    width = len(good) + 1 + len(bad) + 1
    raw = torch.tensor(
        [
            good + [EOS] + bad + [EOS],  # ended; " rain" was sampled after EOS
            (good + bad + good * width)[:width],  # no EOS at all
        ]
    )
    query = torch.tensor([[PAD] + tok.encode("the"), tok.encode("a happy")[:2]])
    qmask = (query != PAD).long()
    backend = fixed_backend(raw)
    rollout = sample_rollout(backend, tok, ["the", "a happy"], query, qmask)

    assert backend.calls[0][0] is query and backend.calls[0][1] is qmask
    assert rollout.response_ids[0].tolist() == good + [EOS] + [PAD] * (len(bad) + 1)
    assert rollout.response_mask[0].tolist() == [1] * (len(good) + 1) + [0] * (len(bad) + 1)
    assert rollout.response_mask[1].tolist() == [1] * width
    assert rollout.ended_with_eos.tolist() == [True, False]
    assert rollout.responses[0] == " good luck"  # EOS removed, nothing after it
    assert rollout.responses[1] == tok.decode(raw[1].tolist())
    assert rollout.prompts == ["the", "a happy"]
    assert rollout.input_ids.shape == (2, query.shape[1] + width)
    assert rollout.attention_mask[0, : query.shape[1]].tolist() == qmask[0].tolist()


# ---------------------------------------------------------------- HFGenerationBackend


def _first_token_samples(backend, tok, n: int = 2000) -> torch.Tensor:
    torch.manual_seed(0)
    query = torch.tensor([tok.encode("the quick")] * n)
    return backend.generate(query, torch.ones_like(query))[:, 0]


def test_hf_backend_returns_only_the_response(tiny_policy, tiny_tokenizer):
    tok = tiny_tokenizer
    query = torch.tensor([[PAD, PAD] + tok.encode("the"), tok.encode("a happy day")[:3]])
    backend = HFGenerationBackend(tiny_policy, tok, GenerationSection(max_new_tokens=6))
    tiny_policy.train()
    out = backend.generate(query, (query != PAD).long())
    assert tiny_policy.training  # restored
    tiny_policy.eval()
    assert out.shape[0] == 2 and 1 <= out.shape[1] <= 6


def test_hf_backend_top_k_zero_means_no_top_k_filter(tiny_policy, tiny_tokenizer):
    """`generation.top_k: 0` is documented as "off": the sampler must use the whole vocabulary.

    The learner's logprobs are log_softmax(logits / T) over the whole vocabulary, so any hidden
    filter makes the sampler and the learner disagree (and biases the k1 KL estimate).
    The near-uniform random-init model puts mass on ~all 300 tokens: 2000 draws of the first
    response token hit > 250 distinct ids; a top-50 filter caps that at 50.
    """
    backend = HFGenerationBackend(tiny_policy, tiny_tokenizer, GenerationSection(temperature=0.7, top_k=0, max_new_tokens=1))
    distinct = _first_token_samples(backend, tiny_tokenizer).unique().numel()
    assert distinct > 250, f"only {distinct} distinct first tokens: a top-k filter is active although top_k=0"


def test_hf_backend_ignores_the_checkpoints_generation_config(tmp_path, tiny_model_dir, tiny_tokenizer):
    """Sampling is set by ppo.generation only; a checkpoint's generation_config.json must not leak in.

    Many hub checkpoints ship top_k / repetition_penalty / suppress_tokens defaults; transformers
    fills every field our GenerationConfig leaves unset from them, silently changing the sampler.
    """
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    suppressed = list(range(2, 152))  # half the vocabulary
    model.generation_config.do_sample = True
    model.generation_config.suppress_tokens = suppressed
    model.save_pretrained(tmp_path / "m")
    model = disable_dropout(AutoModelForCausalLM.from_pretrained(tmp_path / "m")).eval()
    assert model.generation_config.suppress_tokens == suppressed

    backend = HFGenerationBackend(model, tiny_tokenizer, GenerationSection(temperature=0.7, top_k=0, max_new_tokens=1))
    sampled = set(_first_token_samples(backend, tiny_tokenizer).tolist())
    assert sampled & set(suppressed), "the checkpoint's suppress_tokens filtered the PPO sampler"


def test_generate_uses_the_same_positions_as_the_learner(tiny_policy, tiny_tokenizer):
    """HF generate's logits for a left-padded prompt equal our forward pass with mask-based
    position_ids — the premise of recomputing logprobs after sampling (generation.py docstring)."""
    tok = tiny_tokenizer
    p = tok.encode("the quick brown")
    query = torch.tensor([[PAD] * 3 + p, tok.encode("a happy day")[:3] + p])
    qmask = (query != PAD).long()
    out = tiny_policy.generate(
        input_ids=query, attention_mask=qmask, do_sample=False, max_new_tokens=4,
        eos_token_id=EOS, pad_token_id=PAD, return_dict_in_generate=True, output_logits=True,
    )
    seq = out.sequences
    mask = torch.cat([qmask, torch.ones(2, seq.shape[1] - query.shape[1], dtype=torch.long)], 1)
    with torch.no_grad():
        logits = tiny_policy(input_ids=seq, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    sampler = torch.stack(out.logits, 1)
    torch.testing.assert_close(sampler, logits[:, query.shape[1] - 1 : -1], atol=1e-5, rtol=0)
