"""The dataset formats users bring from TRL: SFT prompt/completion and text, implicit-prompt and
conversational preferences, conversational prompt-only; each read, rendered and refused by a rule."""

from __future__ import annotations

import pytest

from rlhfkit.data.records import DataError, PreferenceExample, PromptExample, read_instructions, read_preferences, read_prompts
from rlhfkit.data.templates import render_prompt
from rlhfkit.data.tokenize import IGNORE_INDEX, tokenize_preferences, tokenize_prompts, tokenize_sft

USER = [{"role": "user", "content": "what is two plus two?"}]


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------- SFT


def test_prompt_completion_strings_are_prompt_response(write_jsonl):
    (ex,) = read_instructions(write_jsonl("sft.jsonl", [{"prompt": "Q: 2+2?\nA:", "completion": " 4"}]))
    assert (ex.prompt, ex.response, ex.messages) == ("Q: 2+2?\nA:", " 4", None)


def test_conversational_prompt_completion_is_a_chat_record(write_jsonl, chat_tokenizer):
    (ex,) = read_instructions(write_jsonl("sft.jsonl", [{"prompt": USER, "completion": _reply("four")}]))
    assert ex.messages == USER + _reply("four") and ex.response == "four"
    (row,) = tokenize_sft([ex], chat_tokenizer, 128)
    learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert chat_tokenizer.decode(learned) == "four<|end|>\n<|endoftext|>"


def test_text_records_are_learned_whole(write_jsonl, tokenizer):
    (ex,) = read_instructions(write_jsonl("sft.jsonl", [{"text": "the quick brown fox"}]))
    (row,) = tokenize_sft([ex], tokenizer, 128)
    assert row["labels"] == row["input_ids"]  # no prompt: every token, and the EOS, learned
    assert tokenizer.decode(row["input_ids"]) == "the quick brown fox<|endoftext|>"


@pytest.mark.parametrize("row, field, needle", [
    ({"prompt": "a", "response": "b", "completion": "c"}, "completion", "either 'response' or 'completion'"),
    ({"text": "a", "prompt": "b"}, "text", "give 'text' alone"),
    ({"prompt": USER, "completion": [{"role": "user", "content": "x"}]}, "completion", "exactly one message, from the assistant"),
    ({"prompt": USER + _reply("x"), "completion": _reply("y")}, "prompt[1].role", "must not end with an assistant"),
    ({"prompt": "a", "completion": ""}, "completion", "non-empty string"),
])
def test_bad_sft_records_are_one_line(write_jsonl, row, field, needle):
    path = write_jsonl("sft.jsonl", [{"prompt": "ok", "response": " ok"}, row])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    assert str(err.value).startswith(f"{path}:2: field '{field}': ") and needle in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- preferences


def test_implicit_prompt_strings_split_at_a_word(write_jsonl):
    hh = {"chosen": "\n\nHuman: Can you help?\n\nAssistant: Sure, gladly.",
          "rejected": "\n\nHuman: Can you help?\n\nAssistant: Sorry, no."}
    (ex,) = read_preferences(write_jsonl("prefs.jsonl", [hh]))
    assert ex.prompt == "\n\nHuman: Can you help?\n\nAssistant:"  # not "...Assistant: S"
    assert (ex.chosen, ex.rejected) == (" Sure, gladly.", " Sorry, no.")
    assert ex.prompt + ex.chosen == hh["chosen"] and ex.prompt + ex.rejected == hh["rejected"]


def test_implicit_prompt_keeps_a_whitespace_run_with_the_reply(write_jsonl):
    (ex,) = read_preferences(write_jsonl("prefs.jsonl", [{"chosen": "Q: why?\n\nA good one", "rejected": "Q: why?\n\nA bad one"}]))
    assert (ex.prompt, ex.chosen, ex.rejected) == ("Q: why?\n\nA", " good one", " bad one")


def _chat_pair(chat_tokenizer, row, write_jsonl) -> PreferenceExample:
    (ex,) = read_preferences(write_jsonl("prefs.jsonl", [row]))
    assert ex.prompt is None and ex.messages == USER and (ex.chosen, ex.rejected) == ("four", "five")
    return ex


@pytest.mark.parametrize("row", [
    {"prompt": USER, "chosen": _reply("four"), "rejected": _reply("five")},  # explicit prompt
    {"chosen": USER + _reply("four"), "rejected": USER + _reply("five")},  # implicit prompt
])
def test_conversational_pairs_are_rendered_like_the_policy_prompt(chat_tokenizer, write_jsonl, row):
    ex = _chat_pair(chat_tokenizer, row, write_jsonl)
    (pair,) = tokenize_preferences([ex], chat_tokenizer, 128)
    eos = chat_tokenizer.eos_token
    assert chat_tokenizer.decode(pair["chosen_input_ids"]) == f"<|user|>what is two plus two?<|end|>\n<|assistant|>four<|end|>\n{eos}"
    assert chat_tokenizer.decode(pair["rejected_input_ids"]).endswith(f"<|assistant|>five<|end|>\n{eos}")
    # The correctness point: the RM reads the prompt exactly as PPO generates from it.
    (ppo_prompt,) = tokenize_prompts([PromptExample(prompt=None, messages=USER)], chat_tokenizer, 128)
    assert pair["chosen_input_ids"][: len(ppo_prompt)] == ppo_prompt


def test_conversational_pairs_without_a_template_use_the_plain_one(tokenizer, write_jsonl):
    ex = _chat_pair(tokenizer, {"prompt": USER, "chosen": _reply("four"), "rejected": _reply("five")}, write_jsonl)
    (pair,) = tokenize_preferences([ex], tokenizer, 128)
    assert tokenizer.decode(pair["chosen_input_ids"]) == "User: what is two plus two?\nAssistant: four<|endoftext|>"
    assert render_prompt(tokenizer, ex) == "User: what is two plus two?\nAssistant: "


@pytest.mark.parametrize("row, field, needle", [
    ({"chosen": "abc", "rejected": "xyz"}, "prompt", "share no prompt text"),
    ({"chosen": "same start", "rejected": "same start"}, "rejected", "identical to 'chosen'"),
    ({"chosen": USER + _reply("a"), "rejected": [{"role": "user", "content": "other"}] + _reply("b")}, "rejected",
     "same conversation up to the last message"),
    ({"chosen": USER + _reply("a") + USER, "rejected": USER + _reply("b") + USER}, "rejected",
     "same conversation up to the last message"),
    ({"chosen": _reply("a"), "rejected": _reply("b")}, "chosen", "needs the prompt's messages"),
    ({"prompt": USER, "chosen": _reply("a")}, "rejected", "missing"),
    ({"prompt": USER, "chosen": "a", "rejected": _reply("b")}, "chosen", "non-empty array"),
    ({"prompt": "text", "chosen": _reply("a"), "rejected": _reply("b")}, "prompt", "non-empty array"),
    ({"prompt": USER, "chosen": _reply("a") + _reply("c"), "rejected": _reply("b")}, "chosen", "exactly one message"),
])
def test_bad_preference_records_are_one_line(write_jsonl, row, field, needle):
    path = write_jsonl("prefs.jsonl", [{"prompt": "p", "chosen": " a", "rejected": " b"}, row])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    assert str(err.value).startswith(f"{path}:2: field '{field}': "), str(err.value)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- prompts


def test_conversational_prompt_only(write_jsonl, chat_tokenizer):
    (ex,) = read_prompts(write_jsonl("prompts.jsonl", [{"prompt": USER}]))
    assert ex.prompt is None and ex.messages == USER
    assert render_prompt(chat_tokenizer, ex) == "<|user|>what is two plus two?<|end|>\n<|assistant|>"
    path = write_jsonl("bad.jsonl", [{"prompt": USER + _reply("x")}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'prompt\[1\].role': a prompt must not end with an assistant"):
        read_prompts(path)


def test_run_warns_when_preferences_and_prompts_differ_in_form(monkeypatch):
    import io

    from rich.console import Console

    from rlhfkit import pipeline
    from rlhfkit.config.stages import RunConfig

    out = io.StringIO()
    monkeypatch.setattr(pipeline, "console", Console(file=out, width=400))
    cfg = RunConfig.model_validate({"rm": {"data": {"path": "prefs.jsonl"}}, "ppo": {"data": {"path": "prompts.jsonl"}}})
    string_pair = PreferenceExample(prompt="p", chosen=" a", rejected=" b")
    chat_pair = PreferenceExample(prompt=None, chosen="a", rejected="b", messages=USER)
    chat_prompt = PromptExample(prompt=None, messages=USER)
    pipeline._warn_on_mixed_forms(cfg, [chat_pair], [chat_prompt])
    assert out.getvalue() == ""
    pipeline._warn_on_mixed_forms(cfg, [string_pair], [chat_prompt])
    assert "prefs.jsonl holds plain-string preferences but prompts.jsonl chat (messages) prompts" in out.getvalue()
