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


def test_rm_gold_accuracy_scores_the_ensemble_ppo_optimises(tmp_path, monkeypatch):
    """All of PPO's reward models, combined by PPO's rule (not the first member alone), are compared
    with gold, as the fortunes task does; ranking only, so no clip and no EOS penalty."""
    import torch

    from rlhfkit.config.stages import RewardSourceSection
    from rlhfkit.rewards import sources
    from rlhfkit.tasks.assistant import task as task_module

    seen = {}

    class TwoMembers:  # member 0 ranks only "yes A" right, member 1 only "yes B"; their mean ranks both
        def __init__(self, paths, cfg, device, prompt_records=None):
            seen.update(paths=list(paths), cfg=cfg, records=prompt_records)

        def score(self, prompts, responses):
            table = {"yes A": (1.0, -0.5), "no A": (0.0, 0.0), "yes B": (-0.5, 1.0), "no B": (0.0, 0.0)}
            members = torch.tensor([table[r] for r in responses]).T
            combined = members.mean(0) if len(seen["paths"]) > 1 else members[0]
            return sources.ScoredBatch(combined, members)

    monkeypatch.setattr(sources, "RewardModelEnsemble", TwoMembers)
    monkeypatch.setattr(task_module, "render_prompt", lambda tokenizer, record: "<chat>" + record.messages[-1]["content"])
    task = AssistantTask(TaskSection(name="assistant"), tmp_path, seed=0)
    monkeypatch.setattr(task, "_tokenizer", lambda: None)
    task._gold = FixedGold({"yes A": 0.9, "no A": 0.1, "yes B": 0.8, "no B": 0.2})
    user = lambda q: [{"role": "user", "content": q}]
    reply = lambda r: [{"role": "assistant", "content": r}]
    task.held_out_preferences.write_text(
        json.dumps({"prompt": user("a?"), "chosen": reply("yes A"), "rejected": reply("no A")}) + "\n"
        + json.dumps({"prompt": user("b?"), "chosen": reply("yes B"), "rejected": reply("no B")}) + "\n")
    reward = RewardSourceSection(ensemble="mean", missing_eos_penalty=1.0, clip=2.0)
    assert task.rm_gold_accuracy(["rm", "rm-1"], reward, torch.device("cpu")) == 1.0
    assert seen["paths"] == ["rm", "rm-1"] and seen["cfg"].ensemble == "mean" and seen["cfg"].normalize
    assert seen["cfg"].clip is None and seen["cfg"].missing_eos_penalty is None
    assert set(seen["records"]) == {"<chat>a?", "<chat>b?"}  # each RM renders the prompt its own way
    assert task.rm_gold_accuracy(["rm"], reward, torch.device("cpu")) == 0.5  # member 0 alone: 1 of 2


def test_refresh_labels_read_the_question_behind_the_chat_prompt_and_follow_the_majority(tmp_path, monkeypatch):
    """`label_preferences` (the RM refresh's labeller) gets PPO's chat-rendered prompts: the gold
    must read the user's question, and each pair's label is the annotators' majority (None where no
    preference exists), the same on a second call with the same pairs (a resumed run)."""
    task = AssistantTask(TaskSection(name="assistant", num_annotators=3), tmp_path, seed=0)
    seen_questions = []

    class QuestionGold(FixedGold):
        def score(self, questions, responses):
            seen_questions.extend(questions)
            return super().score(questions, responses)

    task._gold = QuestionGold({"clear": 0.9, "bad": 0.0, "tie": 0.3, "same": 0.3, "close": 0.52, "near": 0.50})
    task._questions = {"<chat>q1": "q1", "<chat>q2": "q2"}
    prompts = ["<chat>q1", "<chat>q2", "<chat>q1", "<chat>q2"] + ["<chat>q1"] * 40
    a = ["clear", "bad", "tie", "clear"] + ["close"] * 40
    b = ["bad", "clear", "same", "clear"] + ["near"] * 40
    labels = task.label_preferences(prompts, a, b)
    assert labels[:4] == [True, False, None, None]  # unanimous either way; a gold tie; identical replies
    assert set(seen_questions) == {"q1", "q2"}
    close = labels[4:]
    assert True in close and False in close  # a 0.02 gap: annotators at 0.03-0.12 split, the majority varies
    assert task.label_preferences(prompts, a, b) == labels
