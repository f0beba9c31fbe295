"""Reward-model refresh helpers: labels → records, accuracy on fresh pairs, the RNG fence,
the human-label file format and the schedule."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.data.records import load_records
from rlhfkit.rewards.refresh import LabelsNeeded, RewardRefresher, pair_accuracy, preference_records, preserved_rng


def test_preference_records_orders_pairs_and_drops_no_preference():
    records = preference_records(["p1", "p2", "p3", "p4"], ["a1", "a2", "a3", "same"], ["b1", "b2", "b3", "same"],
                                 [True, False, None, True])
    assert records == [{"prompt": "p1", "chosen": "a1", "rejected": "b1"},
                       {"prompt": "p2", "chosen": "b2", "rejected": "a2"}]  # None and identical pairs left out


def test_empty_responses_are_left_out_so_the_rm_stage_accepts_the_round(tmp_path):
    # Regression: a policy that emits EOS at once gave {"rejected": ""}, which the RM data loader
    # refused mid-PPO (file:line: field 'rejected': must be a non-empty string).
    records = preference_records(["p1", "p2", "p3"], ["good", "", "fine"], ["bad", "meh", " \n"], [True, True, False])
    assert records == [{"prompt": "p1", "chosen": "good", "rejected": "bad"}]
    path = tmp_path / "round.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r.chosen for r in load_records(path, "preferences")] == ["good"]


def test_preference_records_rejects_a_wrong_number_of_labels():
    with pytest.raises(ConfigError, match="2 labels for 3 pairs"):
        preference_records(["p"] * 3, ["a"] * 3, ["b"] * 3, [True, False])


def test_pair_accuracy_counts_pairs_ranked_like_the_labels():
    length = lambda prompts, responses: torch.tensor([float(len(r)) for r in responses])  # noqa: E731
    records = [{"prompt": "", "chosen": "long one", "rejected": "s"},   # ranked right
               {"prompt": "", "chosen": "xx", "rejected": "yyyy"},      # wrong
               {"prompt": "", "chosen": "abc", "rejected": "abc!"},     # wrong
               {"prompt": "", "chosen": "abcdef", "rejected": "ab"}]    # right
    assert pair_accuracy(length, records) == 0.5
    assert pair_accuracy(length, []) is None


def test_preserved_rng_leaves_every_stream_where_it_was():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        torch.manual_seed(99), random.seed(99), np.random.seed(99)
        torch.rand(10), random.random(), np.random.rand()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def _refresher(tmp_path, *overrides):
    cfg = load_config(None, ["ppo.num_iterations=10", "ppo.reward.model_paths=[rm]", "ppo.reward_refresh.every=4", *overrides])
    return RewardRefresher(cfg, tmp_path, task_labeler=None)


def test_schedule_skips_the_last_iteration(tmp_path):
    refresher = _refresher(tmp_path, "ppo.num_iterations=8")
    assert [i for i in range(1, 9) if refresher.due(i)] == [4]  # not 8: no PPO left to use the new RM


def test_file_labeler_writes_pairs_then_reads_the_filled_labels(tmp_path):
    refresher = _refresher(tmp_path, "ppo.reward_refresh.labeler=file", "ppo.reward_refresh.num_pairs=3")
    sampled = lambda picked: ([f"p{i}" for i in picked], [f"a{i}" for i in picked], [f"b{i}" for i in picked])  # noqa: E731
    assert refresher.start(4, num_prompts=5, sample_pairs=sampled) is None
    assert refresher.pending_iteration == 4
    path = tmp_path / "refresh" / "round-1" / "to_label.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 and all(r["preferred"] == "?" for r in rows)

    with pytest.raises(LabelsNeeded, match="3 response pairs wait"):
        refresher.labelled_by_person()
    for row, answer in zip(rows, ["a", "b", "tie"]):
        row["preferred"] = answer
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, info = refresher.labelled_by_person()
    assert info == {"iteration": 4, "sampled_pairs": 3}
    assert [(r["chosen"], r["rejected"]) for r in records] == [(rows[0]["response_a"], rows[0]["response_b"]),
                                                               (rows[1]["response_b"], rows[1]["response_a"])]

    rows[2]["preferred"] = "A"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"to_label\.jsonl:3: field 'preferred'"):
        refresher.labelled_by_person()


def test_state_round_trips(tmp_path):
    refresher = _refresher(tmp_path)
    refresher.round, refresher.model_paths, refresher.pending_iteration = 2, ["x/rm-0/model"], None
    other = _refresher(tmp_path)
    other.load_state_dict(json.loads(json.dumps(refresher.state_dict())))
    assert other.state_dict() == refresher.state_dict()


def test_config_rejects_a_labeler_that_is_no_function_spec():
    with pytest.raises(ConfigError, match="labeler must be 'task', 'file', 'web' or 'module:function'"):
        load_config(None, ["ppo.reward_refresh.labeler=annotators"])


def test_refreshed_member_paths_are_stored_relative_to_the_stage_directory(tmp_path):
    """A moved run directory resumes with the refreshed reward models at their new place."""
    from rlhfkit.rewards.refresh import RewardRefresher

    old_stage, new_stage = tmp_path / "a" / "ppo", tmp_path / "b" / "ppo"
    refresher = RewardRefresher.__new__(RewardRefresher)
    refresher.dir, refresher.round, refresher.pending_iteration = old_stage / "refresh", 1, None
    refresher.model_paths = [str(old_stage / "refresh" / "round-1" / "rm-0" / "model"), "/elsewhere/rm"]
    state = refresher.state_dict()
    assert state["model_paths"] == ["{stage_dir}/refresh/round-1/rm-0/model", "/elsewhere/rm"]
    moved = RewardRefresher.__new__(RewardRefresher)
    moved.dir = new_stage / "refresh"
    moved.load_state_dict(state)
    assert moved.model_paths == [str(new_stage / "refresh" / "round-1" / "rm-0" / "model"), "/elsewhere/rm"]


def test_pairs_on_chat_prompts_are_written_in_chat_form_and_load_as_chat_pairs(tmp_path):
    """A refresh pair on a chat prompt goes to the RM stage as its original data did (the prompt's
    messages, the replies as assistant turns), not as the policy's rendered template text, which an
    encoder RM would otherwise learn from in a form it is never scored in."""
    from rlhfkit.data.records import PromptExample
    from rlhfkit.rewards.refresh import file_record

    messages = [{"role": "user", "content": "is hal alive"}]
    rendered = "<|im_start|>user\nis hal alive<|im_end|>\n<|im_start|>assistant\n"
    record = {"prompt": rendered, "chosen": "No, HAL is fiction.", "rejected": "BALL BALL"}
    row = file_record(record, PromptExample(prompt=None, messages=messages))
    assert row == {"prompt": messages, "chosen": [{"role": "assistant", "content": "No, HAL is fiction."}],
                   "rejected": [{"role": "assistant", "content": "BALL BALL"}]}
    assert file_record(record, None) == record and file_record(record, PromptExample(prompt=rendered)) == record
    path = tmp_path / "round.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (pair,) = load_records(path, "preferences")
    assert pair.messages == messages and pair.chosen == "No, HAL is fiction." and pair.rejected == "BALL BALL"


def test_replayed_old_pairs_keep_their_chat_form_and_soft_labels(tmp_path):
    from rlhfkit.rewards.refresh import replay_record

    old = tmp_path / "old.jsonl"
    chat = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go"}], "votes": {"chosen": 2, "rejected": 1}}
    text = {"prompt": "Q:", "chosen": " yes", "rejected": " no", "margin": 1.5}
    old.write_text(json.dumps(chat) + "\n" + json.dumps(text) + "\n")
    rows = [replay_record(p) for p in load_records(old, "preferences")]
    assert rows[0] == {"prompt": chat["prompt"], "chosen": chat["chosen"], "rejected": chat["rejected"],
                       "p_chosen": pytest.approx(2 / 3)}
    assert rows[1] == text
    again = tmp_path / "again.jsonl"
    again.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_records(again, "preferences") == load_records(old, "preferences")  # round trip, field for field
