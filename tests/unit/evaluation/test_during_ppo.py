"""Scheduling and sharding of the held-out evaluation during PPO (evaluation/during_ppo.py)."""

from __future__ import annotations

import pytest

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.evaluation.during_ppo import check_held_out, eval_due, share


def _due(every, last):
    return [i for i in range(1, last + 1) if eval_due(i, every, last)]


def test_every_n_iterations_and_always_the_last():
    assert _due(3, 10) == [3, 6, 9, 10]
    assert _due(5, 10) == [5, 10]  # the last is a multiple: evaluated once, not twice
    assert _due(1, 4) == [1, 2, 3, 4]
    assert _due(50, 10) == [10]  # rarer than the run is long: at the end only
    assert _due(None, 10) == []  # no `every`: only the evaluation after PPO


def test_a_schedule_without_the_last_iteration_is_caught():
    broken = [i for i in range(1, 11) if i % 3 == 0]  # the easy version forgets the end of the run
    assert broken != _due(3, 10)


@pytest.mark.parametrize("n, world", [(8, 2), (7, 2), (5, 3), (1, 2), (0, 2), (64, 1)])
def test_shares_cover_every_prompt_once_in_order(n, world):
    parts = [share(n, rank, world) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(n))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


def test_share_by_hand():
    assert [list(share(5, r, 2)) for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert [list(share(1, r, 2)) for r in range(2)] == [[0], []]  # rank 1 has nothing, still joins the all-reduce


def test_held_out_prompts_are_required(tmp_path):
    cfg = load_config(None, ["ppo.eval.every=5"])
    with pytest.raises(ConfigError, match=r"ppo.eval.every needs held-out prompts: give ppo.data.eval_path"):
        check_held_out(cfg.ppo, task_given=False)
    check_held_out(cfg.ppo, task_given=True)  # the bundled task has its own held-out prompts
    check_held_out(load_config(None, []).ppo, task_given=False)  # no `every`: nothing needed
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    check_held_out(load_config(None, ["ppo.eval.every=5", f"ppo.data.eval_path={prompts}"]).ppo, task_given=False)


def test_ppo_logging_eval_every_points_at_ppo_eval_every():
    with pytest.raises(ConfigError, match=r"ppo.logging.eval_every is not used by PPO: set ppo.eval.every"):
        load_config(None, ["ppo.logging.eval_every=5"])
    assert load_config(None, ["sft.logging.eval_every=5"]).sft.logging.eval_every == 5  # SFT/RM still use it
