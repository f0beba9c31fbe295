"""Preference records with people's votes: `votes` and `p_chosen`, checked like every other field."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.records import DataError, read_preferences

PAIR = {"prompt": "Q:", "chosen": " yes", "rejected": " no"}


def write(tmp_path, *records) -> str:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({**PAIR, **r}) + "\n" for r in records))
    return str(path)


def test_votes_and_p_chosen_give_the_soft_label(tmp_path):
    path = write(tmp_path, {}, {"votes": {"chosen": 2, "rejected": 1}}, {"votes": {"chosen": 2, "rejected": 1, "tie": 1}},
                 {"p_chosen": 0.7}, {"votes": {"chosen": 1, "tie": 1}, "p_chosen": 0.75}, {"p_chosen": None})
    assert [r.p_chosen for r in read_preferences(path)] == pytest.approx([None, 2 / 3, 2.5 / 4, 0.7, 0.75, None])
    assert read_preferences(path)[0].p_chosen is None  # a hard label


@pytest.mark.parametrize("extra, field, words", [
    ({"votes": [2, 1]}, "votes", ["object"]),
    ({"votes": {"chosen": 2, "against": 1}}, "votes.against", ["unknown key"]),
    ({"votes": {"chosen": -1}}, "votes.chosen", ["non-negative integer"]),
    ({"votes": {"chosen": 1.5}}, "votes.chosen", ["non-negative integer"]),
    ({"votes": {"chosen": True}}, "votes.chosen", ["non-negative integer"]),
    ({"votes": {"chosen": 0, "rejected": 0}}, "votes", ["no vote"]),
    ({"p_chosen": 1.5}, "p_chosen", ["[0, 1]"]),
    ({"p_chosen": "0.5"}, "p_chosen", ["[0, 1]"]),
    ({"p_chosen": True}, "p_chosen", ["[0, 1]"]),
    ({"votes": {"chosen": 2, "rejected": 1}, "p_chosen": 0.9}, "p_chosen", ["disagrees", "0.6667"]),
])
def test_bad_soft_labels_name_file_line_field(tmp_path, extra, field, words):
    path = write(tmp_path, {}, extra)
    with pytest.raises(DataError) as err:
        read_preferences(path)
    assert (err.value.line, err.value.field) == (2, field)
    assert str(err.value).startswith(f"{path}:2: field '{field}'")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_collator_carries_the_soft_label_and_one_for_hard_pairs(tmp_path, tiny_tokenizer):
    from rlhfkit.data.tokenize import PreferenceCollator, tokenize_preferences

    path = write(tmp_path, {"votes": {"chosen": 3, "rejected": 1}}, {})
    batch = PreferenceCollator(tiny_tokenizer.pad_token_id)(tokenize_preferences(read_preferences(path), tiny_tokenizer, 32))
    assert batch["p_chosen"].tolist() == [0.75, 1.0]
