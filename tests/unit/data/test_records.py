"""JSONL reading and validation: good files parse, and every bad input names file, line and field."""

from __future__ import annotations

import json
import pickle
import sys
import types

import pytest

from rlhfkit.data.records import (
    DataError,
    InstructionExample,
    PreferenceExample,
    PromptExample,
    load_records,
    read_instructions,
    read_preferences,
    read_prompts,
    split_holdout,
)

GOOD_PREF = {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


def check(err: pytest.ExceptionInfo, path: str, line: int, field: str | None, *words: str) -> None:
    """The error is one line and names the file, the line (omitted when 0) and the field."""
    e = err.value
    assert isinstance(e, ValueError) and (e.path, e.line, e.field) == (path, line, field)
    text = str(e)
    assert "\n" not in text
    assert text.startswith(f"{path}:{line}: " if line else f"{path}: ")
    if field is not None:
        assert f"field '{field}'" in text
    for word in words:
        assert word in text


# ---------------------------------------------------------------- good files


def test_instructions_both_forms_blank_lines_and_extra_keys(write_jsonl):
    path = write_jsonl("sft.jsonl", [
        {"prompt": "Q: 2+2?\nA:", "response": " 4", "id": 7, "source": "ignored"},
        "",
        "   ",
        {"messages": CHAT + [{"role": "assistant", "content": "4", "name": "bot"}]},
    ])
    first, second = read_instructions(path)
    assert first == InstructionExample(prompt="Q: 2+2?\nA:", response=" 4")
    assert second.prompt is None and second.response == "4"
    assert second.messages[-1] == {"role": "assistant", "content": "4"}  # extra message keys dropped
    assert len(second.messages) == 3


def test_preferences_margin_optional_and_null(write_jsonl):
    path = write_jsonl("prefs.jsonl", [GOOD_PREF, {**GOOD_PREF, "margin": 2}, {**GOOD_PREF, "margin": None}])
    records = read_preferences(path)
    assert records[0] == PreferenceExample("Q: 2+2?\nA:", " 4", " 5", None)
    assert records[1].margin == 2.0 and isinstance(records[1].margin, float)
    assert records[2].margin is None


def test_prompts_both_forms(write_jsonl):
    path = write_jsonl("prompts.jsonl", [{"prompt": "Once upon", "response": "ignored"}, {"messages": CHAT}])
    string_form, chat_form = read_prompts(path)
    assert string_form == PromptExample(prompt="Once upon")
    assert chat_form.prompt is None and chat_form.messages == CHAT


def test_byte_order_mark_and_crlf_are_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "a"}).encode() + b"\r\n{\"prompt\": \"b\"}\r\n")
    assert [r.prompt for r in read_prompts(path)] == ["a", "b"]


# ---------------------------------------------------------------- bad lines


def test_malformed_json(write_jsonl):
    path = write_jsonl("p.jsonl", [GOOD_PREF, '{"prompt": "a", "chosen": "b",'])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 2, None, "invalid JSON", "column")


def test_not_an_object(write_jsonl):
    path = write_jsonl("p.jsonl", ['["prompt", "x"]'])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    check(err, path, 1, None, "expected a JSON object, got array")


def test_missing_field(write_jsonl):
    path = write_jsonl("p.jsonl", [GOOD_PREF, GOOD_PREF, {"prompt": "x", "rejected": "y"}])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 3, "chosen", "missing")


def test_empty_field(write_jsonl):
    path = write_jsonl("p.jsonl", [{**GOOD_PREF, "chosen": ""}])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 1, "chosen", "must be a non-empty string")
    assert str(err.value) == f"{path}:1: field 'chosen': must be a non-empty string"


def test_whitespace_only_field(write_jsonl):
    path = write_jsonl("s.jsonl", [{"prompt": "x", "response": " \n "}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 1, "response", "non-empty")


def test_wrong_type(write_jsonl):
    path = write_jsonl("s.jsonl", [{"prompt": "x", "response": "y"}, {"prompt": 3, "response": "y"}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 2, "prompt", "got number")


def test_invalid_utf8(write_jsonl):
    path = write_jsonl("p.jsonl", [{"prompt": "ok"}, b'{"prompt": "caf\xe9"}'])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    check(err, path, 2, None, "invalid UTF-8 (byte offset 15)")


def test_chosen_equals_rejected(write_jsonl):
    path = write_jsonl("p.jsonl", [{**GOOD_PREF, "rejected": GOOD_PREF["chosen"]}])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 1, "rejected", "identical to 'chosen'")


@pytest.mark.parametrize("margin", ["NaN", "Infinity", '"1.0"', "true", "1e999", "[1]"])
def test_bad_margin(write_jsonl, margin):
    line = json.dumps(GOOD_PREF)[:-1] + f', "margin": {margin}}}'
    path = write_jsonl("p.jsonl", [line])
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 1, "margin", "must be a finite number")


def test_bad_message_role(write_jsonl):
    bad = CHAT + [{"role": "robot", "content": "4"}]
    path = write_jsonl("s.jsonl", [{"messages": bad}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 1, "messages[2].role", '"robot"')


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ("hello", "messages"),
        ([], "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": ""}], "messages[0].content"),
        ([{"content": "x"}], "messages[0].role"),
    ],
)
def test_malformed_messages(write_jsonl, messages, field):
    path = write_jsonl("p.jsonl", [{"messages": messages}])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    check(err, path, 1, field)


def test_last_message_not_assistant(write_jsonl):
    path = write_jsonl("s.jsonl", [{"messages": CHAT}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 1, "messages[1].role", "must come from the assistant")


def test_response_without_prompt_messages(write_jsonl):
    path = write_jsonl("s.jsonl", [{"messages": [{"role": "assistant", "content": "hi"}]}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 1, "messages", "at least one prompt message")


def test_prompt_ending_with_assistant(write_jsonl):
    path = write_jsonl("p.jsonl", [{"messages": CHAT + [{"role": "assistant", "content": "4"}]}])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    check(err, path, 1, "messages[2].role", "must not end with an assistant")


def test_mixed_forms(write_jsonl):
    path = write_jsonl("s.jsonl", [{"prompt": "x", "messages": CHAT}])
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 1, "messages", "not both")


@pytest.mark.parametrize("rows", [[], ["", "  "]])
def test_empty_file(write_jsonl, rows):
    path = write_jsonl("empty.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_instructions(path)
    check(err, path, 0, None, "no records")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError) as err:
        read_preferences(path)
    check(err, path, 0, None, "file not found")


def test_data_error_survives_pickling():
    e = pickle.loads(pickle.dumps(DataError("a.jsonl", 3, "x", "bad")))
    assert (e.path, e.line, e.field, str(e)) == ("a.jsonl", 3, "x", "a.jsonl:3: field 'x': bad")


# ---------------------------------------------------------------- load_records


def test_load_records_reads_jsonl_without_datasets(write_jsonl, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    path = write_jsonl("p.jsonl", [GOOD_PREF])
    assert load_records(path, "preferences") == read_preferences(path)
    with pytest.raises(ValueError, match="kind must be one of"):
        load_records(path, "pairs")


@pytest.mark.parametrize("source", ["org/some-dataset", "org/some-dataset:test", "local.parquet"])
def test_load_records_without_datasets_says_how_to_install(monkeypatch, source):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError) as err:
        load_records(source, "prompts")
    check(err, source, 0, None, "pip install rlhfkit[datasets]")


def test_load_records_with_datasets_validates_rows(monkeypatch):
    calls = []
    rows = [{"prompt": "a", "messages": None}, {"prompt": None, "messages": CHAT}, {"prompt": "", "messages": None}]

    def load_dataset(name, split, **kwargs):
        calls.append((name, split))
        return rows[: 2 if split == "train" else 3]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    records = load_records("org/prompts", "prompts")
    assert [r.prompt for r in records] == ["a", None] and records[1].messages == CHAT
    with pytest.raises(DataError) as err:
        load_records("org/prompts:test", "prompts")
    check(err, "org/prompts:test", 3, "prompt", "non-empty")
    assert calls == [("org/prompts", "train"), ("org/prompts", "test")]


# ---------------------------------------------------------------- split_holdout


def test_split_holdout_is_deterministic_partition():
    records = list(range(40))
    train, held = split_holdout(records, 0.25, seed=1)
    assert len(held) == 10 and sorted(train + held) == records
    assert train == sorted(train) and held == sorted(held)  # original order kept
    assert split_holdout(records, 0.25, seed=1) == (train, held)
    assert split_holdout(records, 0.25, seed=2) != (train, held)


def test_split_holdout_edges():
    assert split_holdout([1, 2, 3], 0.0, seed=0) == ([1, 2, 3], [])
    train, held = split_holdout([1, 2, 3], 0.01, seed=0)
    assert len(held) == 1 and len(train) == 2  # at least one held out
    train, held = split_holdout([1, 2], 0.9, seed=0)
    assert len(held) == 1 and len(train) == 1  # at least one kept for training
    assert split_holdout([1], 0.5, seed=0) == ([1], [])
    with pytest.raises(ValueError):
        split_holdout([1, 2], 1.0, seed=0)


def test_unpaired_surrogate_escape(write_jsonl):
    path = write_jsonl("p.jsonl", ['{"prompt": "ab\\ud800"}'])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    check(err, path, 1, "prompt", "surrogate")
