"""`data.columns`: a user's column names mapped onto rlhfkit's fields, for JSONL and `datasets` sources."""

from __future__ import annotations

import sys
import types

import pytest

from rlhfkit.config.load import ConfigError, load_config
from rlhfkit.config.sections import DataSection
from rlhfkit.data.records import DataError, InstructionExample, PreferenceExample, load_records
from rlhfkit.stages.common import read_train_and_held_out

SFT_COLUMNS = {"prompt": "question", "response": "answer"}
PREF_COLUMNS = {"prompt": "q", "chosen": "good", "rejected": "bad", "margin": "gap"}


def _fake_datasets(monkeypatch, rows: list[dict]) -> None:
    """`datasets.load_dataset` returning `rows` (as the real one does for a hub name), not installed here."""
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda name, split, **kw: rows))


def test_sft_jsonl_columns_read_as_rlhfkit_fields(write_jsonl):
    path = write_jsonl("sft.jsonl", [{"question": "Q: 2+2?\nA:", "answer": " 4", "id": 7}])
    assert load_records(path, "instructions", SFT_COLUMNS) == [InstructionExample(prompt="Q: 2+2?\nA:", response=" 4")]
    # without the mapping the same file is refused, naming the field rlhfkit looked for
    with pytest.raises(DataError, match="field 'prompt': missing"):
        load_records(path, "instructions")


def test_sft_chat_column_and_trl_completion(write_jsonl):
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    path = write_jsonl("chat.jsonl", [{"conversation": chat}, {"conversation": chat[:1] + [chat[1]]}])
    records = load_records(path, "instructions", {"messages": "conversation"})
    assert [r.messages for r in records] == [chat, chat]
    path = write_jsonl("trl.jsonl", [{"q": "Q:", "a": " yes"}])
    assert load_records(path, "instructions", {"prompt": "q", "completion": "a"}) == [
        InstructionExample(prompt="Q:", response=" yes")]


def test_preference_columns_from_a_datasets_source(monkeypatch):
    _fake_datasets(monkeypatch, [{"q": "Q: 2+2?\nA:", "good": " 4", "bad": " 5", "gap": 1.5, "prompt": "ignored"}])
    (pair,) = load_records("org/prefs", "preferences", PREF_COLUMNS)
    # `q` is renamed onto `prompt` and replaces the row's own `prompt` column
    assert pair == PreferenceExample(prompt="Q: 2+2?\nA:", chosen=" 4", rejected=" 5", margin=1.5)


def test_an_error_in_a_renamed_column_names_the_users_column(write_jsonl, monkeypatch):
    path = write_jsonl("p.jsonl", [{"q": "Q:", "good": " a", "bad": " b"}, {"q": "Q:", "good": 3, "bad": " b"}])
    with pytest.raises(DataError) as err:
        load_records(path, "preferences", PREF_COLUMNS)
    assert (err.value.line, err.value.field) == (2, "good (columns: chosen)")
    assert str(err.value) == f"{path}:2: field 'good (columns: chosen)': must be a non-empty string, got number"
    user, reply = [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}]
    _fake_datasets(monkeypatch, [{"q": user, "good": user, "bad": reply}])  # chat form: `good` is no reply
    with pytest.raises(DataError) as err:
        load_records("org/prefs", "preferences", PREF_COLUMNS)
    assert err.value.field == "good (columns: chosen)"
    path = write_jsonl("missing.jsonl", [{"good": " a", "bad": " b", "question": "Q:"}])
    with pytest.raises(DataError, match=r"field 'answer \(columns: response\)': missing"):
        load_records(path, "instructions", {"prompt": "question", "response": "answer"})


def test_unknown_or_ambiguous_mappings_are_refused(write_jsonl):
    path = write_jsonl("p.jsonl", [{"q": "Q:", "good": " a", "bad": " b"}])
    with pytest.raises(ValueError, match=r"^columns.response: 'response' is not a field of preferences records "
                                         r"\(fields: prompt, chosen, rejected, margin, votes, p_chosen\)$"):
        load_records(path, "preferences", {"response": "good"})
    with pytest.raises(ValueError, match="column 'good' is mapped onto two fields"):
        load_records(path, "preferences", {"chosen": "good", "rejected": "good"})


@pytest.mark.parametrize(("stage", "target", "kind"), [
    ("sft", "chosen", "instructions"), ("rm", "response", "preferences"), ("ppo", "chosen", "prompts")])
def test_config_refuses_a_field_the_stage_does_not_read(stage, target, kind):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{stage}.data.columns={{{target}: x}}"])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"config: {stage}.data: columns.{target}: '{target}' is not a field of {kind} records")


def test_the_stage_reader_applies_columns_to_train_and_eval_files(write_jsonl):
    train = write_jsonl("train.jsonl", [{"q": "Q:", "good": f" a{i}", "bad": " b"} for i in range(3)])
    held = write_jsonl("eval.jsonl", [{"q": "Q:", "good": " c", "bad": " d"}])
    data = DataSection(path=train, eval_path=held, columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    records, held_out = read_train_and_held_out(data, "preferences", 0, "rm", "{prompt, chosen, rejected}")
    assert [r.chosen for r in records] == [" a0", " a1", " a2"] and [r.chosen for r in held_out] == [" c"]
