"""SFT on every assistant turn of a multi-turn chat record (labels = token ids on each assistant
turn, -100 elsewhere), with a chat template, with the plain template, and the fallback."""

from __future__ import annotations

from rlhfkit.data.records import InstructionExample
from rlhfkit.data.templates import render_prompt, render_prompt_segments
from rlhfkit.data.tokenize import IGNORE_INDEX, tokenize_sft

TWO_TURNS = [
    {"role": "system", "content": "be brief."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "what is two plus two?"},
    {"role": "assistant", "content": "four"},
]


def _example(messages=TWO_TURNS) -> InstructionExample:
    return InstructionExample(prompt=None, response=messages[-1]["content"], messages=messages)


def _runs(tokenizer, row: dict, learned: bool) -> list[str]:
    """The decoded maximal runs of labelled (learned=True) or masked tokens, in order."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if (label != IGNORE_INDEX) == learned:
            if label != IGNORE_INDEX:
                assert label == token  # a learned position predicts its own token (HF shifts)
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_chat_template_learns_both_assistant_turns(chat_tokenizer):
    (row,) = tokenize_sft([_example()], chat_tokenizer, max_length=256)
    # By hand from CHAT_TEMPLATE: each assistant turn is "<content><|end|>\n"; the last gets the EOS.
    assert _runs(chat_tokenizer, row, learned=True) == ["hi<|end|>\n", "four<|end|>\n<|endoftext|>"]
    assert _runs(chat_tokenizer, row, learned=False) == [
        "<|system|>be brief.<|end|>\n<|user|>hello there<|end|>\n<|assistant|>",
        "<|user|>what is two plus two?<|end|>\n<|assistant|>",
    ]


def test_plain_template_learns_each_assistant_content(tokenizer):
    (row,) = tokenize_sft([_example()], tokenizer, max_length=256)
    assert _runs(tokenizer, row, learned=True) == ["hi", "four<|endoftext|>"]
    assert _runs(tokenizer, row, learned=False) == [
        "System: be brief.\nUser: hello there\nAssistant: ", "\nUser: what is two plus two?\nAssistant: "]


def test_segments_join_to_the_prompt_ppo_sees(chat_tokenizer, tokenizer):
    for tok in (chat_tokenizer, tokenizer):
        segments = render_prompt_segments(tok, _example())
        assert "".join(text for text, _ in segments) == render_prompt(tok, _example())
        assert [learned for _, learned in segments] == [False, True, False]


def test_single_turn_and_raw_records_learn_only_the_response(chat_tokenizer):
    single = InstructionExample(prompt=None, response="hi", messages=TWO_TURNS[:3])
    raw = InstructionExample(prompt="Q: hello", response=" hi")
    for example in (single, raw):
        assert [learned for _, learned in render_prompt_segments(chat_tokenizer, example)] == [False]


def test_template_that_rewrites_earlier_turns_falls_back_to_the_last_turn(chat_tokenizer):
    # This template drops every assistant turn but the last: a turn's rendering is not a prefix of the
    # conversation's, so there is no earlier span to learn.
    chat_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    (row,) = tokenize_sft([_example()], chat_tokenizer, max_length=256)
    assert _runs(chat_tokenizer, row, learned=True) == ["four<|end|>\n<|endoftext|>"]


def test_left_truncation_keeps_labels_aligned(chat_tokenizer):
    (full,) = tokenize_sft([_example()], chat_tokenizer, max_length=256)
    width = len(full["input_ids"]) - 5  # cut 5 tokens off the prompt's left end
    (cut,) = tokenize_sft([_example()], chat_tokenizer, max_length=width)
    assert cut["input_ids"] == full["input_ids"][5:] and cut["labels"] == full["labels"][5:]
