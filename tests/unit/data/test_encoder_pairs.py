"""Encoder reward models' pairs (rlhfkit.data.pairs): framed by the tokenizer itself, truncated by the rule."""

from __future__ import annotations

import pytest
from tokenizers import processors

from rlhfkit.data.pairs import is_encoder_tokenizer, pair_template
from rlhfkit.data.records import PreferenceExample
from rlhfkit.data.tokenize import PreferenceCollator, TruncationStats, tokenize_preferences
from rlhfkit.models.tiny import build_tiny_encoder_tokenizer


@pytest.fixture
def bert():
    return build_tiny_encoder_tokenizer()


def test_the_frame_is_read_off_the_tokenizer(bert, tokenizer):
    cls, sep = bert.cls_token_id, bert.sep_token_id
    frame = pair_template(bert)
    assert (frame.pre, frame.mid, frame.post, frame.types) == ((cls,), (sep,), (sep,), ((0,), 0, (0,), 1, (1,)))
    assert frame.build([7, 8], [9]) == ([cls, 7, 8, sep, 9, sep], [0, 0, 0, 0, 1, 1])
    # RoBERTa's frame, <s> A </s></s> B </s>, without token types: taken as it is, not assumed to be BERT's
    bert.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    assert pair_template(bert).build([7], [9])[0] == [cls, 7, sep, sep, 9, sep]
    assert is_encoder_tokenizer(bert) and not is_encoder_tokenizer(tokenizer)  # a decoder's has no [CLS]


def test_encoder_preferences_are_the_tokenizers_own_pair_encoding(bert):
    pair = PreferenceExample(prompt="you will find", chosen=" love and joy", rejected=" grey rain")
    (row,) = tokenize_preferences([pair], bert, max_length=64)
    for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        direct = bert(pair.prompt, text)
        assert row[f"{side}_input_ids"] == direct["input_ids"]
        assert row[f"{side}_token_type_ids"] == direct["token_type_ids"]
    assert bert.eos_token is None  # nothing appended: an encoder has no EOS
    batch = PreferenceCollator(bert.pad_token_id)([row, row])
    assert batch["chosen_token_type_ids"].shape == batch["chosen_input_ids"].shape
    assert batch["rejected_token_type_ids"][0].tolist()[: len(row["rejected_token_type_ids"])] == row["rejected_token_type_ids"]


def test_truncation_keeps_the_frame_and_follows_the_rule(bert):
    long_prompt = " ".join(["the quick brown fox"] * 10)
    pair = PreferenceExample(prompt=long_prompt, chosen=" love and joy", rejected=" grey rain")
    stats = TruncationStats()
    (row,) = tokenize_preferences([pair], bert, max_length=16, stats=stats)
    ids = row["chosen_input_ids"]
    assert len(ids) == 16 and stats.truncated == 1
    assert ids[0] == bert.cls_token_id and ids[-1] == bert.sep_token_id and ids.count(bert.sep_token_id) == 2
    # the prompt is cut from the left (its end kept) and the short response survives whole
    response = bert.encode(pair.chosen, add_special_tokens=False)
    prompt = bert.encode(long_prompt, add_special_tokens=False)
    assert ids == [bert.cls_token_id, *prompt[-(13 - len(response)):], bert.sep_token_id, *response, bert.sep_token_id]
