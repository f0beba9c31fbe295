"""Held-out evaluation while PPO trains (`ppo.eval.every`): the final evaluation's measures, every N iterations.

Every `every` iterations, and at the last one, the current policy answers held-out prompts — the
bundled task's evaluation prompts, else `ppo.data.eval_path`; never the prompts PPO trains on — and
the stage logs, as means per response, the exact KL(π‖π_ref), the proxy (reward-source) score, the
gold score where a task has a judge, and the response length (`eval/*`, metric_names.py). The
numbers come from `evaluate_policy` (evaluation/policy_eval.py), the code the evaluation after PPO
runs, on the same first prompts, at the same settings (eval.temperature, eval.max_new_tokens) and
seed: in one process the last point is the final evaluation's "after" figures.

- RNG: sampling runs inside `torch.random.fork_rng`, re-seeded with the run's seed each time. The
  training stream goes on exactly as without evaluation (a run with `every: 1` trains the same
  policy as one without), every point sees the same randomness (the curve's differences are the
  policy's, not the sampler's), and a resumed run gives the same numbers at the same iteration.
- Data parallel: each process evaluates a contiguous share of the prompts; the per-share sums and
  counts cross in one all-reduce, so every process gets the global means. Every process evaluates at
  the same iterations (the schedule depends on the iteration alone), so none waits in a collective
  the others skip; only the main process writes the figures (the stage's metrics writer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import PPOConfig, RunConfig
from rlhfkit.data.records import PromptExample, load_records
from rlhfkit.data.templates import render_prompt
from rlhfkit.data.tokenize import TruncationStats, tokenize_prompts
from rlhfkit.evaluation.policy_eval import Judge, evaluate_policy, evaluation_generation
from rlhfkit.metric_names import M
from rlhfkit.training.distributed import Collectives

#: evaluate_policy's aggregate → the metric it is logged as (judges are added by name).
_LOGGED = {"kl": M.EVAL_KL, "length": M.EVAL_RESPONSE_LENGTH, "proxy_mean": M.EVAL_PROXY_SCORE,
           "gold_mean": M.EVAL_GOLD_SCORE}


def eval_due(iteration: int, every: int | None, last: int) -> bool:
    """Evaluate after this iteration? Every `every` iterations and at the last one; never without `every`."""
    return every is not None and (iteration % every == 0 or iteration == last)


def share(n: int, rank: int, world_size: int) -> range:
    """The contiguous, near-equal part of n items for `rank` (the first n mod W processes get one more)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


@dataclass(frozen=True)
class HeldOutPrompts:
    """What PPO evaluates on: prompts it never trains on, and the task's gold judge if it has one."""

    examples: list[PromptExample]
    gold: Judge | None = None


def check_held_out(ppo: PPOConfig, task_given: bool) -> None:
    """`ppo.eval.every` needs held-out prompts: the task's, or ppo.data.eval_path (checked before any model loads)."""
    if ppo.eval.every is None or task_given:
        return
    if not ppo.data.eval_path:
        raise ConfigError("ppo.eval.every needs held-out prompts: give ppo.data.eval_path (a JSONL file of {prompt} "
                          "records PPO does not train on), or leave ppo.eval.every empty")
    load_records(ppo.data.eval_path, "prompts")


def held_out_from_config(ppo: PPOConfig) -> HeldOutPrompts:
    check_held_out(ppo, task_given=False)
    return HeldOutPrompts(load_records(ppo.data.eval_path, "prompts"))


class HeldOutEvaluator:
    """`evaluator(policy, reference) -> {eval/...: global mean}` on this process's share of the held-out prompts."""

    def __init__(self, held_out: HeldOutPrompts, tokenizer, cfg: RunConfig, proxy: Judge, collectives: Collectives,
                 rank: int):
        examples = held_out.examples[: cfg.ppo.eval.num_prompts or cfg.eval.num_prompts]
        if not examples:
            raise ConfigError("ppo.eval.every: the held-out prompt file holds no prompts")
        mine = [examples[i] for i in share(len(examples), rank, collectives.world_size)]
        stats = TruncationStats()
        self.ids = tokenize_prompts(mine, tokenizer, cfg.ppo.generation.max_prompt_length, stats)
        if stats.dropped:
            raise ConfigError(f"ppo.eval.every: {stats.dropped} held-out prompt(s) tokenize to nothing")
        self.texts = [render_prompt(tokenizer, e) for e in mine]
        # rendered text -> record, so a reward model with its own tokenizer (an encoder, another chat
        # template) reads each held-out prompt rendered its own way, as it does the training prompts
        self.prompt_records = dict(zip(self.texts, mine))
        self.tokenizer, self.collectives, self.seed = tokenizer, collectives, cfg.seed
        self.generation = evaluation_generation(cfg)
        self.judges = {"proxy": proxy, **({"gold": held_out.gold} if held_out.gold is not None else {})}
        self.keys = [_LOGGED["kl"], _LOGGED["length"], *(_LOGGED[f"{name}_mean"] for name in self.judges)]

    def __call__(self, policy, reference) -> dict[str, float]:
        sums = torch.zeros(len(self.keys) + 1, dtype=torch.float64, device=self.collectives.device)
        if self.texts:  # a process with no share (fewer prompts than processes) still joins the all-reduce
            was_training = policy.training
            device = self.collectives.device  # the CPU stream is always forked; an accelerator's (CUDA, MPS) too
            accelerator = {} if device.type == "cpu" else {"devices": [device.index or 0], "device_type": device.type}
            with torch.random.fork_rng(**({"devices": []} | accelerator)):  # evaluate_policy seeds the global RNG
                _, aggregate = evaluate_policy(policy, reference, self.tokenizer, self.texts, self.ids, self.generation,
                                               self.seed, self.judges)
            policy.train(was_training)
            n = len(self.texts)
            by_metric = {metric: aggregate[name] for name, metric in _LOGGED.items() if name in aggregate}
            sums[:-1] = torch.tensor([by_metric[key] * n for key in self.keys], dtype=torch.float64)
            sums[-1] = n
        totals = self.collectives.sum(sums).tolist()
        return {key: total / totals[-1] for key, total in zip(self.keys, totals[:-1])}


__all__ = ["HeldOutEvaluator", "HeldOutPrompts", "check_held_out", "eval_due", "held_out_from_config", "share"]
