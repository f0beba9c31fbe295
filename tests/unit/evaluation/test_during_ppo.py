"""Scheduling, sharding and the global means of the held-out evaluation during PPO (evaluation/during_ppo.py)."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.data.records import PromptExample
from rlhfkit.evaluation import during_ppo
from rlhfkit.evaluation.during_ppo import HeldOutEvaluator, HeldOutPrompts, check_held_out, eval_due, share
from rlhfkit.metric_names import M


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


# ---------------------------------------------------------------- the global means from per-process shares


class _TwoProcesses:
    """Collectives of rank 0 in a 2-process run: `sum` adds what the other process contributed."""

    def __init__(self, other: list[float]):
        self.device, self.world_size, self.other, self.calls = torch.device("cpu"), 2, other, 0

    def sum(self, tensor):
        self.calls += 1
        return tensor + torch.tensor(self.other, dtype=tensor.dtype)


def _evaluator(monkeypatch, tokenizer, prompts: list[str], collectives, rank: int = 0, num_prompts: int = 3):
    def fake_evaluate_policy(policy, reference, tokenizer, texts, ids, generation, seed, judges):
        # per-response means of this share, as evaluate_policy returns them: KL 1 per prompt, proxy 2, length 10
        n = len(texts)
        return [], {"kl": 1.0 * n, "length": 10.0, "proxy_mean": 2.0, "gold_mean": 0.5}

    monkeypatch.setattr(during_ppo, "evaluate_policy", fake_evaluate_policy)
    cfg = load_config(None, [f"eval.num_prompts={num_prompts}", "ppo.eval.every=1"])
    held_out = HeldOutPrompts([PromptExample(prompt=p) for p in prompts], gold=lambda p, r: [0.0] * len(r))
    return HeldOutEvaluator(held_out, tokenizer, cfg, proxy=lambda p, r: [0.0] * len(r), collectives=collectives, rank=rank)


def test_global_means_weigh_each_share_by_its_prompts(monkeypatch, tiny_tokenizer):
    # 3 prompts over 2 processes: rank 0 evaluates 2 (KL mean 2.0 there by the fake), rank 1 one prompt with
    # KL mean 5, proxy 8, gold 1.5, length 4, sent as sums (mean × n) plus the count.
    other = [5.0, 4.0, 8.0, 1.5, 1.0]  # keys: eval/kl, eval/response_length, eval/proxy_score, eval/gold_score; n
    collectives = _TwoProcesses(other)
    evaluator = _evaluator(monkeypatch, tiny_tokenizer, ["the quick", "a happy", "the sad", "not used"], collectives)
    assert evaluator.texts == ["the quick", "a happy"]  # rank 0's share of the first num_prompts
    figures = evaluator(torch.nn.Linear(1, 1), None)
    assert collectives.calls == 1  # one all-reduce per evaluation
    assert figures == pytest.approx({M.EVAL_KL: (2 * 2.0 + 5.0) / 3, M.EVAL_RESPONSE_LENGTH: (2 * 10 + 4.0) / 3,
                                     M.EVAL_PROXY_SCORE: (2 * 2.0 + 8.0) / 3, M.EVAL_GOLD_SCORE: (2 * 0.5 + 1.5) / 3})
    unweighted = (2.0 + 5.0) / 2  # the mean of the two processes' means: wrong with unequal shares
    assert figures[M.EVAL_KL] != pytest.approx(unweighted)


def test_a_process_without_prompts_still_joins_the_reduction(monkeypatch, tiny_tokenizer):
    collectives = _TwoProcesses([3.0, 6.0, 9.0, 0.3, 1.0])  # the other process evaluated the only prompt
    evaluator = _evaluator(monkeypatch, tiny_tokenizer, ["the quick"], collectives, rank=1, num_prompts=1)
    assert evaluator.texts == []
    figures = evaluator(torch.nn.Linear(1, 1), None)
    assert collectives.calls == 1
    assert figures == pytest.approx({M.EVAL_KL: 3.0, M.EVAL_RESPONSE_LENGTH: 6.0, M.EVAL_PROXY_SCORE: 9.0,
                                     M.EVAL_GOLD_SCORE: 0.3})
