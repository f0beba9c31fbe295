"""Where PPO's scalar score comes from: reward-model checkpoints (one or an ensemble) or a callable.

Every source scores *text*: the prompt and the response are re-tokenized with the reward
model's own tokenizer exactly as in RM training (prompt ids + response ids + EOS), so a reward
model with a different tokenizer from the policy works. The score is read at that EOS token
(N+ detail 11), where the RM learned to put it. A response that ran out of budget without
emitting EOS is scored the same way and then penalised (`missing_eos_penalty`, N+ detail 15),
rather than read at an arbitrary mid-sentence token the RM never saw scored.

Ensembles combine members (Coste et al. 2023): `mean`, `min` (worst case) or `uncertainty`
(mean − λ·variance). The members' disagreement (std across members) is returned with the
scores so it can be logged every iteration.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import RewardSourceSection
from rlhfkit.models.load import disable_dropout, freeze, load_reward_model, load_tokenizer
from rlhfkit.models.scoring import sequence_scores


class RewardFunctionError(RuntimeError):
    """A user reward callable failed or returned something unusable; names the batch."""


def combine_scores(member_scores: torch.Tensor, how: str, uncertainty_penalty: float = 1.0) -> torch.Tensor:
    """(K, B) member scores -> (B,) combined score."""
    if how == "mean" or member_scores.shape[0] == 1:
        return member_scores.mean(0)
    if how == "min":
        return member_scores.min(0).values
    if how == "uncertainty":
        return member_scores.mean(0) - uncertainty_penalty * member_scores.var(0, unbiased=False)
    raise ValueError(f"unknown ensemble rule {how!r}")


@dataclass
class ScoredBatch:
    scores: torch.Tensor  # (B,) combined
    members: torch.Tensor  # (K, B) each member's score (K = 1 for a single source)

    @property
    def disagreement(self) -> float:
        """Mean over the batch of the std across members (0 for one member)."""
        if self.members.shape[0] < 2:
            return 0.0
        return float(self.members.std(0, unbiased=False).mean())


class RewardModelEnsemble:
    """One or more `AutoModelForSequenceClassification` reward models, frozen, dropout off."""

    def __init__(self, paths: Sequence[str], cfg: RewardSourceSection, device: torch.device, dtype: str = "fp32", batch_size: int = 16):
        self.cfg = cfg
        self.device = device
        self.batch_size = batch_size
        self.members: list[tuple[PreTrainedModel, PreTrainedTokenizerBase, float, float]] = []
        for i, path in enumerate(paths):
            section = ModelSection(name_or_path=path, dtype=dtype)
            where = f"ppo.reward.model_paths[{i}]"
            tokenizer = load_tokenizer(section, where)
            model = freeze(disable_dropout(load_reward_model(section, tokenizer, where, fresh_head=False))).to(device)
            mean = float(getattr(model.config, "rlhfkit_score_mean", 0.0))
            std = float(getattr(model.config, "rlhfkit_score_std", 1.0)) or 1.0
            self.members.append((model, tokenizer, mean, std))

    def _encode(self, tokenizer, prompt: str, response: str) -> list[int]:
        # split_special_tokens: "<|endoftext|>" written as text by the policy must not become a real EOS here
        ids = [*tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"],
               *tokenizer(response, add_special_tokens=False, split_special_tokens=True)["input_ids"]]
        return ids + [tokenizer.eos_token_id]

    @torch.no_grad()
    def _member_scores(self, model, tokenizer, prompts, responses) -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), self.batch_size):
            seqs = [self._encode(tokenizer, p, r) for p, r in zip(prompts[start:start + self.batch_size],
                    responses[start:start + self.batch_size])]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            out.append(sequence_scores(model, ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out)

    def score(self, prompts: list[str], responses: list[str]) -> ScoredBatch:
        members = []
        for model, tokenizer, mean, std in self.members:
            raw = self._member_scores(model, tokenizer, prompts, responses)
            members.append((raw - mean) / std if self.cfg.normalize else raw)
        stacked = torch.stack(members)
        return ScoredBatch(combine_scores(stacked, self.cfg.ensemble, self.cfg.uncertainty_penalty), stacked)


def import_function(spec: str, key: str) -> Callable:
    """`package.module:function` -> the function; ConfigError naming the config `key` when it cannot be imported.

    The working directory is searched after everything else on the import path (`python -m` puts it
    first, the `rlhfkit` console script not at all): a `my_reward.py` next to the config is found,
    but cannot shadow an installed package. A SIGINT/SIGTERM during the import is no import error:
    TrainingInterrupted is a BaseException and passes through."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, but also a SyntaxError or a crash in the user's module
        raise ConfigError(f"{key}: cannot import module {module_name!r} (searched the working directory {cwd} "
                          f"and the Python path): {type(err).__name__}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{key}: {module_name!r} has no callable {attr!r}")
    return fn


def import_reward_callable(spec: str) -> Callable[[list[str], list[str]], Sequence[float]]:
    return import_function(spec, "ppo.reward.callable")


class CallableReward:
    """A Python function `f(prompts, responses) -> list[float]` as the reward."""

    def __init__(self, spec: str):
        self.spec = spec
        self.fn = import_reward_callable(spec)

    def score(self, prompts: list[str], responses: list[str]) -> ScoredBatch:
        preview = f"first prompt {prompts[0]!r}, response {responses[0]!r}" if prompts else "empty batch"
        try:
            raw = self.fn(list(prompts), list(responses))
        except Exception as err:  # the user's code: report it with the batch, then stop
            raise RewardFunctionError(f"reward callable {self.spec} raised {type(err).__name__}: {err} (batch of {len(prompts)}; {preview})") from err
        try:
            scores = torch.as_tensor([float(x) for x in raw], dtype=torch.float32)
        except (TypeError, ValueError):
            raise RewardFunctionError(f"reward callable {self.spec} must return one number per response, got {type(raw).__name__} ({preview})") from None
        if scores.shape != (len(prompts),):
            raise RewardFunctionError(f"reward callable {self.spec} returned {scores.numel()} scores for {len(prompts)} responses ({preview})")
        if not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).nonzero()[0])
            raise RewardFunctionError(f"reward callable {self.spec} returned {scores[bad].item()} for response {bad}: {responses[bad]!r}")
        return ScoredBatch(scores, scores.unsqueeze(0))


def finalize_scores(batch: ScoredBatch, ended: torch.Tensor, cfg: RewardSourceSection) -> torch.Tensor:
    """Apply the missing-EOS penalty and clipping to combined scores."""
    scores = batch.scores.clone()
    if cfg.missing_eos_penalty is not None:
        scores = scores - cfg.missing_eos_penalty * (~ended.cpu()).float()
    if cfg.clip is not None:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    return scores
