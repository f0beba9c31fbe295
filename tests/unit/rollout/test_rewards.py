"""Reward sources: a tiny reward-model checkpoint, ensembles, user callables, the missing-EOS penalty."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from transformers import GPT2ForSequenceClassification

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import RewardSourceSection
from rlhfkit.models.scoring import sequence_scores
from rlhfkit.rewards.sources import (
    CallableReward,
    RewardFunctionError,
    RewardModelEnsemble,
    ScoredBatch,
    combine_scores,
    finalize_scores,
)

PROMPTS = ["the quick brown fox", "a happy day", "never trust a computer you", "all"]
RESPONSES = [" jumps over the lazy dog", " brings", " cannot lift", " that glitters is not gold, but it is shiny"]
CPU = torch.device("cpu")


def _save_rm(model_dir, out_dir, tokenizer, seed: int, **config_extra):
    """A GPT2ForSequenceClassification (num_labels=1) from the tiny LM, head with visible scale."""
    torch.manual_seed(seed)
    rm = GPT2ForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        rm.score.weight.normal_(0.0, 1.0)
    for key, value in config_extra.items():
        setattr(rm.config, key, value)
    rm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    root = tmp_path_factory.mktemp("rm")
    plain = _save_rm(tiny_model_dir, root / "rm_a", tiny_tokenizer, seed=1)
    normed = _save_rm(tiny_model_dir, root / "rm_b", tiny_tokenizer, seed=2, rlhfkit_score_mean=0.5, rlhfkit_score_std=2.0)
    return str(plain), str(normed)


# ---------------------------------------------------------------- reward-model ensemble


def test_padded_batch_scores_like_each_sequence_alone(rm_dirs):
    together = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(), CPU, batch_size=16).score(PROMPTS, RESPONSES)
    alone = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(), CPU, batch_size=1)
    single = torch.cat([alone.score([p], [r]).scores for p, r in zip(PROMPTS, RESPONSES)])
    assert together.scores.shape == (4,) and together.members.shape == (1, 4)
    torch.testing.assert_close(together.scores, single, atol=1e-5, rtol=0)
    assert together.scores.std() > 1e-3  # the scores differ, so the check is not vacuous
    assert together.disagreement == 0.0


def test_score_is_read_at_an_appended_eos(rm_dirs, tiny_tokenizer):
    """Prompt ids + response ids + EOS, as in RM training; the score is the head at that EOS.

    Documented contract (sources.py docstring, docs/ppo.md): EOS is appended to every response,
    also one that ran out of budget; `finalize_scores` penalises those afterwards.
    """
    tok = tiny_tokenizer
    ensemble = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(), CPU)
    model = ensemble.members[0].model
    scored = ensemble.score(PROMPTS, RESPONSES).scores
    for b, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        ids = tok.encode(p) + tok.encode(r)
        with_eos = torch.tensor([ids + [tok.eos_token_id]])
        without = torch.tensor([ids])
        with torch.no_grad():
            s_eos = sequence_scores(model, with_eos, torch.ones_like(with_eos))[0]
            s_no = sequence_scores(model, without, torch.ones_like(without))[0]
        assert scored[b].item() == pytest.approx(s_eos.item(), abs=1e-5)
        assert abs(scored[b].item() - s_no.item()) > 1e-4


# ---------------------------------------------------------------- scoring the sampled ids (issue: RM round trip)


def _byte_ids(tok, text: str) -> list[int]:
    """`text` as one token per byte: a valid sampled sequence that BPE would never produce itself."""
    return [tok.convert_tokens_to_ids(ch) for piece, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
            for ch in piece]


def _sampled_rollout(tok):
    """Two sampled episodes whose response ids are not the tokenizer's own encoding of their text:
    row 0 ended with EOS, row 1 ran out of budget (no EOS)."""
    from rlhfkit.data.tokenize import PromptCollator
    from rlhfkit.rollout.generation import truncate_after_eos
    from rlhfkit.rollout.types import Rollout

    prompts = ["the quick brown fox", "a happy day"]
    responses = [" jumps over the lazy dog", " brings good luck"]
    raw = [_byte_ids(tok, r) for r in responses]
    width = max(len(r) for r in raw) + 1
    raw = [raw[0] + [tok.eos_token_id] + [tok.pad_token_id] * (width - len(raw[0]) - 1), raw[1] + [7] * (width - len(raw[1]))]
    ids, mask, ended = truncate_after_eos(torch.tensor(raw), tok.eos_token_id, tok.pad_token_id)
    batch = PromptCollator(tok.pad_token_id)([tok.encode(p) for p in prompts])
    texts = tok.batch_decode(ids.masked_fill(mask == 0, tok.pad_token_id), skip_special_tokens=True)
    return Rollout(batch["input_ids"], batch["attention_mask"], ids, mask, ended, prompts, texts)


def test_a_rollout_is_scored_on_its_sampled_ids_as_an_rm_training_example(rm_dirs, tiny_tokenizer):
    """The score of a sampled rollout = the score of the same ids laid out as an RM training example
    (prompt ids + response ids + EOS, right-padded by the RM stage's collator)."""
    from rlhfkit.data.tokenize import PreferenceCollator

    tok = tiny_tokenizer
    rollout = _sampled_rollout(tok)
    assert tok.encode(rollout.responses[0]) != _byte_ids(tok, rollout.responses[0])  # the round trip is not identity here
    ensemble = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(normalize=False), CPU, policy_tokenizer=tok)
    assert ensemble.members[0].reads_policy_ids
    scored = ensemble.score_rollout(rollout).scores

    prompts = [tok.encode(p) for p in rollout.prompts]
    responses = [[t for t, m in zip(r, rm) if m] for r, rm in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist())]
    assert responses[0][-1] == tok.eos_token_id and responses[1][-1] != tok.eos_token_id
    examples = [{"chosen_input_ids": p + (r if r[-1] == tok.eos_token_id else r + [tok.eos_token_id]),
                 "rejected_input_ids": p + [tok.eos_token_id], "margin": None} for p, r in zip(prompts, responses)]
    batch = PreferenceCollator(tok.pad_token_id)(examples)
    with torch.no_grad():
        as_training = sequence_scores(ensemble.members[0].model, batch["chosen_input_ids"], batch["chosen_attention_mask"])
    torch.testing.assert_close(scored, as_training, atol=1e-5, rtol=0)
    # the decode -> re-tokenize round trip scores another sequence, so it would fail the check above
    round_trip = ensemble.score(rollout.prompts, rollout.responses).scores
    assert (round_trip - as_training).abs().max() > 1e-4


def test_a_reward_model_with_another_vocabulary_scores_the_text(tmp_path, rm_dirs, tiny_tokenizer, capsys):
    from rlhfkit.models.tiny import build_tiny_model, build_tiny_tokenizer

    other_tok = build_tiny_tokenizer(vocab_size=280)
    other = _save_rm(build_tiny_model(tmp_path / "lm", other_tok), tmp_path / "rm", other_tok, seed=3)
    ensemble = RewardModelEnsemble([str(other)], RewardSourceSection(), CPU, policy_tokenizer=tiny_tokenizer)
    assert not ensemble.members[0].reads_policy_ids
    assert "another vocabulary" in capsys.readouterr().err  # the console writes to stderr
    rollout = _sampled_rollout(tiny_tokenizer)
    torch.testing.assert_close(ensemble.score_rollout(rollout).scores, ensemble.score(rollout.prompts, rollout.responses).scores)


def test_scoring_batches_do_not_change_the_scores(rm_dirs, tiny_tokenizer):
    rollout = _sampled_rollout(tiny_tokenizer)
    one = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(batch_size=1), CPU, batch_size=1, policy_tokenizer=tiny_tokenizer)
    two = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(), CPU, batch_size=2, policy_tokenizer=tiny_tokenizer)
    torch.testing.assert_close(one.score_rollout(rollout).scores, two.score_rollout(rollout).scores, atol=1e-5, rtol=0)


def test_ensemble_normalises_and_combines_members(rm_dirs):
    raw_b = RewardModelEnsemble([rm_dirs[1]], RewardSourceSection(normalize=False), CPU).score(PROMPTS, RESPONSES).scores
    norm_b = RewardModelEnsemble([rm_dirs[1]], RewardSourceSection(), CPU).score(PROMPTS, RESPONSES).scores
    torch.testing.assert_close(norm_b, (raw_b - 0.5) / 2.0)

    a = RewardModelEnsemble([rm_dirs[0]], RewardSourceSection(), CPU).score(PROMPTS, RESPONSES).scores
    for rule in ("mean", "min", "uncertainty"):
        cfg = RewardSourceSection(ensemble=rule, uncertainty_penalty=0.5)
        both = RewardModelEnsemble(list(rm_dirs), cfg, CPU).score(PROMPTS, RESPONSES)
        torch.testing.assert_close(both.members, torch.stack([a, norm_b]), atol=1e-6, rtol=0)
        torch.testing.assert_close(both.scores, combine_scores(torch.stack([a, norm_b]), rule, 0.5), atol=1e-6, rtol=0)
        assert both.disagreement == pytest.approx(float(((a - norm_b).abs() / 2).mean()), abs=1e-6)


def test_combine_scores_hand_values():
    members = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, -1.0]])
    assert combine_scores(members, "mean").tolist() == [2.0, 2.0, 1.0]
    assert combine_scores(members, "min").tolist() == [1.0, 2.0, -1.0]
    # mean − λ·Var (population variance): Var = [1, 0, 4]
    assert combine_scores(members, "uncertainty", 0.5).tolist() == [1.5, 2.0, -1.0]
    assert combine_scores(members, "uncertainty", 0.0).tolist() == [2.0, 2.0, 1.0]
    one = torch.tensor([[4.0, -2.0]])
    for rule in ("mean", "min", "uncertainty"):
        assert combine_scores(one, rule).tolist() == [4.0, -2.0]
    with pytest.raises(ValueError, match="median"):
        combine_scores(members, "median")
    assert ScoredBatch(combine_scores(members, "mean"), members).disagreement == pytest.approx(1.0)  # std [1, 0, 2]


# ---------------------------------------------------------------- callable rewards


@pytest.fixture
def reward_module(monkeypatch):
    """An importable module `rollout_test_rewards` holding good and broken reward functions."""
    module = types.ModuleType("rollout_test_rewards")

    def length(prompts, responses):
        return [len(r) for r in responses]

    def raises(prompts, responses):
        raise KeyError("no such label")

    def wrong_count(prompts, responses):
        return [1.0] * (len(responses) - 1)

    def nan_for_second(prompts, responses):
        return [0.0, math.nan] + [0.0] * (len(responses) - 2)

    def inf_for_first(prompts, responses):
        return [math.inf] + [0.0] * (len(responses) - 1)

    def not_numbers(prompts, responses):
        return ["good"] * len(responses)

    def scalar(prompts, responses):
        return 1.0

    for fn in (length, raises, wrong_count, nan_for_second, inf_for_first, not_numbers, scalar):
        setattr(module, fn.__name__, fn)
    module.not_callable = 3
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_callable_reward_scores(reward_module):
    out = CallableReward(f"{reward_module}:length").score(PROMPTS, RESPONSES)
    assert out.scores.dtype == torch.float32
    assert out.scores.tolist() == [float(len(r)) for r in RESPONSES]
    assert out.members.shape == (1, 4) and out.disagreement == 0.0


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("raises", "raised KeyError"),
        ("wrong_count", "returned 3 scores for 4 responses"),
        ("nan_for_second", "returned nan for response 1"),
        ("inf_for_first", "returned inf for response 0"),
        ("not_numbers", "must return one number per response"),
        ("scalar", "must return one number per response"),
    ],
)
def test_callable_reward_errors_name_the_callable_and_a_response(reward_module, name, expect):
    spec = f"{reward_module}:{name}"
    with pytest.raises(RewardFunctionError) as info:
        CallableReward(spec).score(PROMPTS, RESPONSES)
    message = str(info.value)
    assert spec in message
    assert expect in message
    shown = RESPONSES[1] if name == "nan_for_second" else RESPONSES[0]
    assert repr(shown) in message


def test_callable_reward_import_errors(reward_module):
    with pytest.raises(ConfigError, match="ppo.reward.callable.*no_such_module_xyz"):
        CallableReward("no_such_module_xyz:fn")
    with pytest.raises(ConfigError, match="ppo.reward.callable.*'missing'"):
        CallableReward(f"{reward_module}:missing")
    with pytest.raises(ConfigError, match="ppo.reward.callable.*'not_callable'"):
        CallableReward(f"{reward_module}:not_callable")


# ---------------------------------------------------------------- missing-EOS penalty and clipping


def test_finalize_scores_penalises_only_responses_without_eos():
    batch = ScoredBatch(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    ended = torch.tensor([True, False, True, False])
    assert finalize_scores(batch, ended, RewardSourceSection()).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert finalize_scores(batch, ended, RewardSourceSection(missing_eos_penalty=1.5)).tolist() == [1.0, 0.5, 3.0, 2.5]
    # clipping comes first, so the penalty always bites: 4 without EOS is min(4, 2) - 3 = -1, below the
    # finished 3's capped 2 (penalty after a clip would give it 1; with penalty 1.5, 2.5 → 2 = as if finished)
    clipped = finalize_scores(batch, ended, RewardSourceSection(missing_eos_penalty=3.0, clip=2.0))
    assert clipped.tolist() == [1.0, -1.0, 2.0, -1.0]
    capped = finalize_scores(batch, ended, RewardSourceSection(missing_eos_penalty=1.0, clip=2.0))
    assert capped.tolist() == [1.0, 1.0, 2.0, 1.0]
    assert batch.scores.tolist() == [1.0, 2.0, 3.0, 4.0]  # not modified in place
