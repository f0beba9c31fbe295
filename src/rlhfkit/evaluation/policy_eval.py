"""Evaluating a policy on held-out prompts: reward, exact KL to the reference, length, diversity.

- **Exact KL(π‖π_ref)**: for responses y ~ π, KL of the sequence distributions is
  E_y[Σ_t KL(π(·|y<t) ‖ π_ref(·|y<t))]; each inner term is computed exactly over the whole
  vocabulary (`algos.kl.exact_kl_from_logits`), only the outer expectation is sampled. The
  direction is policy first — the seed's `F.kl_div(policy.log(), ref)` computed KL(ref‖policy).
- **Reference perplexity** of the responses, so degenerate text ("good good good") that games a
  reward model shows up as what it is: fluent text has low perplexity under the reference,
  word salad high, and pure repetition suspiciously low together with low distinct-n.
- **distinct-n**: unique n-grams / all n-grams over whitespace tokens of all responses.
- **win rate**: fraction of prompts whose "after" response beats the "before" one by a judge;
  ties count one half.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfkit.algos.kl import exact_kl_from_logits
from rlhfkit.algos.logprobs import logprobs_from_logits
from rlhfkit.config.stages import GenerationSection, RunConfig
from rlhfkit.data.tokenize import PromptCollator
from rlhfkit.models.actor_critic import response_logits
from rlhfkit.rollout.generation import HFGenerationBackend, sample_rollout
from rlhfkit.rollout.types import Rollout

Judge = Callable[[list[str], list[str]], Sequence[float]]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams across all texts (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for text in texts for words in [text.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def win_rate(after: Sequence[float], before: Sequence[float]) -> float:
    """Share of pairs where `after` scores higher; ties count 1/2."""
    if len(after) != len(before) or not after:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(after, before))
    return wins / len(after)


@torch.no_grad()
def gold_preference_accuracy(rm_chosen: Sequence[float], rm_rejected: Sequence[float],
                             gold_chosen: Sequence[float], gold_rejected: Sequence[float]) -> float | None:
    """Share of pairs the reward model orders as the gold judge does; gold ties are left out (None: no pair left)."""
    decided = [(float(c) - float(r), gc - gr) for c, r, gc, gr in zip(rm_chosen, rm_rejected, gold_chosen, gold_rejected)
               if gc != gr]
    if not decided:
        return None
    return sum((rm_diff > 0) == (gold_diff > 0) for rm_diff, gold_diff in decided) / len(decided)


def evaluation_generation(cfg: RunConfig) -> GenerationSection:
    """PPO's sampling settings with the eval section's temperature and response budget."""
    return cfg.ppo.generation.model_copy(update={
        "temperature": cfg.eval.temperature,
        "max_new_tokens": cfg.eval.max_new_tokens or cfg.ppo.generation.max_new_tokens,
    })


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: list[str],
    prompt_ids: list[list[int]],
    generation: GenerationSection,
    seed: int,
    batch_size: int = 32,
) -> list[Rollout]:
    """Sample one response per prompt (seeded, so two policies see the same randomness stream)."""
    torch.manual_seed(seed)
    backend = HFGenerationBackend(model, tokenizer, generation)
    collate = PromptCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    rollouts = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = collate(prompt_ids[start : start + batch_size])
        rollouts.append(sample_rollout(backend, tokenizer, prompt_texts[start : start + batch_size],
                                       batch["input_ids"].to(device), batch["attention_mask"].to(device)))
    return rollouts


@torch.no_grad()
def exact_kl_and_ref_nll(policy: PreTrainedModel, reference: PreTrainedModel, rollout: Rollout, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) exact summed KL(π‖π_ref) along each response, and (B,) summed reference NLL (T = 1)."""
    q = rollout.query_ids.shape[1]
    logits = response_logits(policy, rollout.input_ids, rollout.attention_mask, q)
    ref_logits = response_logits(reference, rollout.input_ids, rollout.attention_mask, q)
    mask = rollout.response_mask.float()
    kl = (exact_kl_from_logits(logits, ref_logits, temperature) * mask).sum(1)
    nll = -(logprobs_from_logits(ref_logits, rollout.response_ids) * mask).sum(1)
    return kl, nll


def evaluate_policy(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: list[str],
    prompt_ids: list[list[int]],
    generation: GenerationSection,
    seed: int,
    judges: dict[str, Judge],
) -> tuple[list[dict], dict[str, float]]:
    """Per-prompt records {prompt, response, <judge>...} and aggregates for one policy."""
    policy.eval()
    rollouts = sample_responses(policy, tokenizer, prompt_texts, prompt_ids, generation, seed)
    kls, nlls, lengths, prompts, responses = [], [], [], [], []
    for rollout in rollouts:
        kl, nll = exact_kl_and_ref_nll(policy, reference, rollout, generation.temperature)
        kls.append(kl)
        nlls.append(nll)
        lengths.append(rollout.response_mask.sum(1).float())
        prompts += rollout.prompts
        responses += rollout.responses
    kl, nll, length = torch.cat(kls), torch.cat(nlls), torch.cat(lengths)
    records = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
    aggregate = {
        "kl": float(kl.mean()),
        "length": float(length.mean()),
        "eos_fraction": float(torch.cat([r.ended_with_eos for r in rollouts]).float().mean()),
        "distinct_1": distinct_n(responses, 1),
        "distinct_2": distinct_n(responses, 2),
        "ref_perplexity": math.exp(float(nll.sum() / length.sum().clamp(min=1))),
    }
    for name, judge in judges.items():
        scores = [float(s) for s in judge(prompts, responses)]
        for record, score in zip(records, scores):
            record[name] = score
        aggregate[f"{name}_mean"] = sum(scores) / len(scores)
    return records, aggregate
