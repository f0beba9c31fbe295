"""The assistant task's labelled pairs carry the annotators' votes, so its reward model trains on
soft targets (2 of 3 votes is a less sure pair than 3 of 3), as the fortunes task's does. The gold
is replaced by fixed scores: what is tested is the labelling, not the judge."""

from __future__ import annotations

import json

import pytest

from rlhfkit.config.stages import TaskSection
from rlhfkit.data.records import read_preferences
from rlhfkit.tasks.assistant.task import AssistantTask


class FixedGold:
    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    def score(self, questions, responses):
        return [self.scores[r] for r in responses]


def test_labelled_pairs_keep_the_vote_counts_as_soft_labels(tmp_path):
    task = AssistantTask(TaskSection(name="assistant", num_annotators=3), tmp_path, seed=0)
    # "clear" is far better than "bad" (every annotator agrees); "close" and "near" differ by 0.02
    # (annotators with temperatures 0.03-0.12 disagree); "tie" and "same" are a gold tie (dropped).
    task._gold = FixedGold({"clear": 0.9, "bad": 0.0, "close": 0.52, "near": 0.50, "tie": 0.3, "same": 0.3})
    pairs = [("clear", "bad"), ("bad", "clear"), ("tie", "same")] + [("close", "near")] * 40
    records, report = task._label(["q?"] * len(pairs), [a for a, _ in pairs], [b for _, b in pairs])
    assert report["n_pairs"] == len(records) == 42  # the gold tie is dropped
    for record in records:
        votes = record["votes"]
        assert votes["chosen"] + votes["rejected"] == 3 and votes["chosen"] >= 2  # the majority's pick is chosen
    assert [r["votes"] for r in records[:2]] == [{"chosen": 3, "rejected": 0}] * 2
    assert records[0]["chosen"][0]["content"] == records[1]["chosen"][0]["content"] == "clear"
    split = [r["votes"]["chosen"] for r in records[2:]]
    assert 2 in split and 3 in split  # close pairs: some unanimous, some split
    # The reward model reads them as p_chosen = votes for chosen / votes.
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    soft = [p.p_chosen for p in read_preferences(path)]
    assert soft[:2] == [1.0, 1.0] and pytest.approx(2 / 3) in soft
