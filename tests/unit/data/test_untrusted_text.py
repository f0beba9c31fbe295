"""Data cannot plant special tokens, and a duplicate on both sides of the split is not graded twice."""

from __future__ import annotations

import pytest

from rlhfkit.config.sections import DataSection
from rlhfkit.data.records import DataError, InstructionExample, PreferenceExample, PromptExample, drop_leaked
from rlhfkit.data.tokenize import tokenize_preferences, tokenize_prompts, tokenize_sft
from rlhfkit.stages import common
from rlhfkit.training.progress import console

EOS = "<|endoftext|>"


def test_special_token_text_in_a_response_stays_text(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    example = InstructionExample(prompt="Q: stop?", response=f" yes{EOS} and <|pad|> more")
    (row,) = tokenize_sft([example], tokenizer, 64)
    assert row["input_ids"][-1] == eos  # the one EOS rlhfkit appends
    assert row["input_ids"].count(eos) == 1 and pad not in row["input_ids"]
    assert EOS in tokenizer.decode(row["input_ids"][:-1])  # the characters are still there, as plain tokens


def test_special_token_text_in_preferences_and_prompts_stays_text(tokenizer):
    eos = tokenizer.eos_token_id
    (pair,) = tokenize_preferences([PreferenceExample(prompt=f"a{EOS}", chosen=f" b{EOS}", rejected=" c")], tokenizer, 64)
    assert pair["chosen_input_ids"].count(eos) == 1 and pair["rejected_input_ids"].count(eos) == 1
    (ids,) = tokenize_prompts([PromptExample(prompt=f"hello{EOS}")], tokenizer, 64)
    assert eos not in ids


def test_special_token_text_inside_a_chat_template_is_refused(chat_tokenizer):
    ok = InstructionExample(prompt=None, response="4", messages=[{"role": "user", "content": "2+2?"},
                                                                   {"role": "assistant", "content": "4"}])
    tokenize_sft([ok], chat_tokenizer, 64)  # the template's own markers are fine
    bad = InstructionExample(prompt=None, response=f"4{EOS}", messages=[{"role": "user", "content": "2+2?"},
                                                                          {"role": "assistant", "content": f"4{EOS}"}])
    with pytest.raises(DataError, match=r"record 2: messages\[1\]\.content contains the special token '<\|endoftext\|>'"):
        tokenize_sft([ok, bad], chat_tokenizer, 64)


def test_drop_leaked_removes_held_out_copies_of_training_records():
    a, b, c = (PreferenceExample("p", x, "r") for x in ("a", "b", "c"))
    held, leaked = drop_leaked([a, b, a], [b, c, PreferenceExample("p", "b", "r", margin=2.0)])
    assert held == [c] and leaked == 2  # margin does not make a pair another example


def test_duplicates_across_the_split_are_left_out_of_the_held_out_set(write_jsonl):
    rows = [{"prompt": f"q{i}", "response": " a"} for i in range(10)] + [{"prompt": "dup", "response": " a"}] * 10
    section = DataSection(path=write_jsonl("sft.jsonl", rows), eval_fraction=0.3)
    common._warned.clear()
    with console.capture() as captured:
        train, held = common.read_train_and_held_out(section, "instructions", 0, "sft", "x")
    assert all(r.prompt != "dup" for r in held) and sum(r.prompt == "dup" for r in train) > 0
    text = " ".join(captured.get().split())
    assert "held-out records (from the eval_fraction split of" in text and "also occur in the training data" in text
    assert len(train) + len(held) < 20  # the leaked copies are gone from the held-out side, not moved


def test_the_reward_model_reads_special_token_text_in_a_response_as_text(tokenizer):
    """A policy that writes the characters <|endoftext|> must not plant a real EOS in what the RM reads."""
    from rlhfkit.rewards.sources import text_rows

    [ids], _ = text_rows(tokenizer, [tokenizer.encode("p")], [f" fine{EOS} more"])
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id
