"""Templates, token ids, labels, truncation and collation, on a tiny local BPE tokenizer."""

from __future__ import annotations

import torch

from rlhfkit.data.records import InstructionExample, PreferenceExample, PromptExample
from rlhfkit.data.templates import render_chat_response, render_prompt
from rlhfkit.data.tokenize import (
    IGNORE_INDEX,
    PreferenceCollator,
    PromptCollator,
    SFTCollator,
    TruncationStats,
    ensure_pad_token,
    pack_sft,
    tokenize_preferences,
    tokenize_prompts,
    tokenize_sft,
)

LONG = "the quick brown fox jumps over the lazy dog " * 8
CHAT = [
    {"role": "system", "content": "be brief."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi"},
]


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------- templates


def test_raw_form_is_verbatim(tokenizer):
    ex = InstructionExample(prompt="Q: two?\nA:", response=" four")
    assert render_prompt(tokenizer, ex) == "Q: two?\nA:"
    assert render_chat_response(tokenizer, ex) == " four"


def test_plain_chat_fallback(tokenizer):
    ex = InstructionExample(prompt=None, response="hi", messages=CHAT)
    assert render_prompt(tokenizer, ex) == "System: be brief.\nUser: hello there\nAssistant: "
    assert render_chat_response(tokenizer, ex) == "hi"
    prompt = PromptExample(prompt=None, messages=CHAT[:2])
    assert render_prompt(tokenizer, prompt) == render_prompt(tokenizer, ex)


def test_chat_template_path(chat_tokenizer):
    ex = InstructionExample(prompt=None, response="hi", messages=CHAT)
    assert render_prompt(chat_tokenizer, ex) == "<|system|>be brief.<|end|>\n<|user|>hello there<|end|>\n<|assistant|>"
    assert render_chat_response(chat_tokenizer, ex) == "hi<|end|>\n"  # the template's end-of-turn is learned


def test_chat_template_eos_not_doubled(chat_tokenizer):
    chat_tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    ex = InstructionExample(prompt=None, response="hi", messages=CHAT)
    assert render_chat_response(chat_tokenizer, ex) == "hi"  # tokenization appends the one EOS
    (row,) = tokenize_sft([ex], chat_tokenizer, max_length=64)
    assert row["input_ids"].count(chat_tokenizer.eos_token_id) == 3  # two prompt turns + the response's


# ---------------------------------------------------------------- SFT


def test_sft_labels_mask_prompt_and_keep_response_and_eos(tokenizer):
    ex = InstructionExample(prompt="Q: what is two plus two?\nA:", response=" four")
    stats = TruncationStats()
    (row,) = tokenize_sft([ex], tokenizer, max_length=64, stats=stats)
    p, r = enc(tokenizer, ex.prompt), enc(tokenizer, ex.response)
    assert row["input_ids"] == p + r + [tokenizer.eos_token_id]
    assert row["labels"][: len(p)] == [IGNORE_INDEX] * len(p)
    assert row["labels"][len(p):] == row["input_ids"][len(p):]
    assert stats.as_dict() == {"total": 1, "truncated": 0, "dropped": 0}


def test_sft_chat_labels_start_after_generation_prompt(chat_tokenizer):
    ex = InstructionExample(prompt=None, response="hi", messages=CHAT)
    (row,) = tokenize_sft([ex], chat_tokenizer, max_length=128)
    n_prompt = len(enc(chat_tokenizer, render_prompt(chat_tokenizer, ex)))
    labelled = row["labels"][n_prompt:]
    assert IGNORE_INDEX not in labelled and row["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert chat_tokenizer.decode(labelled) == "hi<|end|>\n<|endoftext|>"


def test_sft_truncation_cuts_response_first_and_drops_eos(tokenizer):
    ex = InstructionExample(prompt="Q: hello", response=LONG)
    stats = TruncationStats()
    (row,) = tokenize_sft([ex], tokenizer, max_length=32, stats=stats)
    p = enc(tokenizer, ex.prompt)
    assert len(row["input_ids"]) == 32
    assert row["input_ids"] == p + enc(tokenizer, LONG)[: 32 - len(p)]  # prompt whole, response cut
    assert tokenizer.eos_token_id not in row["input_ids"]
    assert stats.as_dict() == {"total": 1, "truncated": 1, "dropped": 0}


def test_sft_truncation_cuts_long_prompt_from_the_left(tokenizer):
    ex = InstructionExample(prompt=LONG + "Q:", response=LONG)
    stats = TruncationStats()
    (row,) = tokenize_sft([ex], tokenizer, max_length=40, stats=stats)
    p, r = enc(tokenizer, ex.prompt), enc(tokenizer, LONG)
    # The response is guaranteed max_length // 4 = 10 tokens; the prompt keeps its last 30.
    assert row["input_ids"] == p[-30:] + r[:10]
    assert row["labels"] == [IGNORE_INDEX] * 30 + r[:10]
    assert stats.truncated == 1


def test_sft_short_response_survives_whole_with_eos(tokenizer):
    ex = InstructionExample(prompt=LONG, response=" four")
    (row,) = tokenize_sft([ex], tokenizer, max_length=40)
    r = enc(tokenizer, " four") + [tokenizer.eos_token_id]
    assert len(row["input_ids"]) == 40 and row["input_ids"][-len(r):] == r
    assert row["input_ids"][: 40 - len(r)] == enc(tokenizer, LONG)[-(40 - len(r)):]


def test_sft_drops_example_with_no_room_for_response(tokenizer):
    stats = TruncationStats()
    rows = tokenize_sft([InstructionExample(prompt=LONG, response="x")], tokenizer, max_length=3, stats=stats)
    assert rows == [] and stats.as_dict() == {"total": 1, "truncated": 0, "dropped": 1}


def test_pack_sft_blocks():
    examples = [
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
        {"input_ids": [4, 5, 6, 7], "labels": [-100, -100, 6, 7]},
    ]
    blocks = pack_sft(examples, max_length=3)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [b["labels"] for b in blocks] == [[-100, 2, 3], [-100, -100, 6], [7]]


def test_sft_collator_right_pads():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    batch = SFTCollator(pad_token_id=9)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


# ---------------------------------------------------------------- preferences


def test_preferences_append_eos_to_both(tokenizer):
    ex = PreferenceExample(prompt="Q: two?", chosen=" four", rejected=" five", margin=1.5)
    (row,) = tokenize_preferences([ex], tokenizer, max_length=64)
    p, eos = enc(tokenizer, "Q: two?"), tokenizer.eos_token_id
    assert row["chosen_input_ids"] == p + enc(tokenizer, " four") + [eos]
    assert row["rejected_input_ids"] == p + enc(tokenizer, " five") + [eos]
    assert row["margin"] == 1.5


def test_preferences_truncation_shares_prompt_and_counts(tokenizer):
    stats = TruncationStats()
    ex = PreferenceExample(prompt=LONG, chosen=" four", rejected=LONG + "!", margin=None)
    (row,) = tokenize_preferences([ex], tokenizer, max_length=40, stats=stats)
    chosen, rejected = row["chosen_input_ids"], row["rejected_input_ids"]
    assert chosen[:30] == rejected[:30] == enc(tokenizer, LONG)[-30:]  # longer response sets the prompt cut
    assert chosen[-1] == tokenizer.eos_token_id  # the short one keeps its EOS
    assert len(rejected) == 40 and tokenizer.eos_token_id not in rejected  # the cut one loses it
    assert stats.as_dict() == {"total": 1, "truncated": 1, "dropped": 0}


def test_preferences_identical_after_truncation_are_dropped(tokenizer):
    stats = TruncationStats()
    ex = PreferenceExample(prompt="Q:", chosen=LONG + "yes", rejected=LONG + "no", margin=None)
    assert tokenize_preferences([ex], tokenizer, max_length=16, stats=stats) == []
    assert stats.as_dict() == {"total": 1, "truncated": 0, "dropped": 1}


def test_preference_collator_common_width_and_margin():
    batch = PreferenceCollator(pad_token_id=0)([
        {"chosen_input_ids": [5, 6, 7], "rejected_input_ids": [5, 8], "margin": None},
        {"chosen_input_ids": [5], "rejected_input_ids": [5, 9, 9, 7], "margin": 2.0},
    ])
    assert batch["chosen_input_ids"].tolist() == [[5, 6, 7, 0], [5, 0, 0, 0]]
    assert batch["rejected_input_ids"].tolist() == [[5, 8, 0, 0], [5, 9, 9, 7]]
    assert batch["chosen_attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["rejected_attention_mask"].sum(-1).tolist() == [2, 4]
    assert batch["margin"].tolist() == [0.0, 2.0] and batch["margin"].dtype == torch.float32
    last = batch["rejected_attention_mask"].sum(-1) - 1  # where the reward model reads its score
    assert batch["rejected_input_ids"].gather(1, last[:, None]).squeeze(1).tolist() == [8, 7]


# ---------------------------------------------------------------- prompts and padding


def test_tokenize_prompts_left_truncates(chat_tokenizer):
    stats = TruncationStats()
    examples = [PromptExample(prompt="Q: hello"), PromptExample(prompt=LONG + "end"), PromptExample(None, CHAT[:2])]
    short, long, chat = tokenize_prompts(examples, chat_tokenizer, max_prompt_length=12, stats=stats)
    assert short == enc(chat_tokenizer, "Q: hello")
    assert long == enc(chat_tokenizer, LONG + "end")[-12:]
    assert chat == enc(chat_tokenizer, render_prompt(chat_tokenizer, examples[2]))[-12:]
    assert stats.as_dict() == {"total": 3, "truncated": 2, "dropped": 0}


def test_prompt_collator_left_pads():
    batch = PromptCollator(pad_token_id=0)([[3, 4, 5], [6]])
    assert batch["input_ids"].tolist() == [[3, 4, 5], [0, 0, 6]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_ensure_pad_token(tokenizer, eos_pad_tokenizer, tokenizer_json):
    assert ensure_pad_token(tokenizer) is False
    assert eos_pad_tokenizer.pad_token_id == eos_pad_tokenizer.eos_token_id
    assert ensure_pad_token(eos_pad_tokenizer) is True
    assert eos_pad_tokenizer.pad_token == "<|pad|>"
    assert eos_pad_tokenizer.pad_token_id != eos_pad_tokenizer.eos_token_id
    assert ensure_pad_token(eos_pad_tokenizer) is False  # idempotent


def test_ensure_pad_token_adds_a_new_token_when_missing():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2}, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    assert tok.pad_token is None and len(tok) == 3
    assert ensure_pad_token(tok) is True
    assert tok.pad_token_id == 3 and len(tok) == 4  # the caller resizes embeddings to len(tok)
