"""Where PPO's scalar score comes from: reward-model checkpoints (one or an ensemble) or a callable.

A reward model that shares the policy's tokenizer (the default: the RM is trained from the SFT
model) scores the *exact ids the policy sampled*: the prompt's ids + the response's ids + the EOS
the RM was trained with, right-padded — the layout of an RM training example
(data/tokenize.py::tokenize_preferences). Decoding the response to text and re-tokenizing it
would score another sequence than the one PPO credits: BPE round trips are not identity (merges
across the prompt/response boundary, special-token text, byte fallbacks). Only a reward model
with another vocabulary scores re-tokenized text, and that is said once; a chat prompt is then
rendered from its record with that model's own tokenizer (its chat template, or the plain one),
as its RM stage rendered the preferences it learned from (`prompt_records`).
The score is read at that EOS token (N+ detail 11), where the RM learned to put it. A response
that ran out of budget without emitting EOS gets the EOS appended like every other and is then
penalised (`missing_eos_penalty`, N+ detail 15), rather than read at an arbitrary mid-sentence
token the RM never saw scored.

An encoder reward model (BERT-style, rlhfkit.data.pairs) always has its own vocabulary: it scores
the (prompt, response text) pair framed by its own tokenizer, ``[CLS] prompt [SEP] response [SEP]``,
truncated to its positions by the RM-training rule, exactly as it was trained, and its score is read
at [CLS]; no EOS is appended (the missing-EOS penalty still applies to what the policy wrote).

Ensembles combine members (Coste et al. 2023): `mean`, `min` (worst case) or `uncertainty`
(mean − λ·variance). The members' disagreement (std across members) is returned with the
scores so it can be logged every iteration.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.markup import escape
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import RewardSourceSection
from rlhfkit.data.pairs import PairTemplate, is_encoder_tokenizer, pair_template
from rlhfkit.data.tokenize import encode_prompt, fit_to_length
from rlhfkit.models.load import context_length, disable_dropout, freeze, load_reward_model, load_tokenizer
from rlhfkit.models.scoring import sequence_scores
from rlhfkit.training.progress import console


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


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when ids mean the same tokens in both tokenizers (so sampled ids can be scored as they are)."""
    return (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id
            and a.pad_token_id == b.pad_token_id)


def rm_rows_from_ids(query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor,
                     response_mask: torch.Tensor, eos_id: int) -> list[list[int]]:
    """The RM-training layout of each sampled episode: prompt ids + response ids + EOS.

    query (B, Tq) left-padded, response (B, Tr) valid up to and including its first EOS. A response
    that emitted EOS already ends with it; one cut off at the budget gets it appended (as in RM
    training, where every response ends with EOS)."""
    rows = []
    for q, qm, r, rm in zip(query_ids.tolist(), query_mask.tolist(), response_ids.tolist(), response_mask.tolist()):
        prompt = [t for t, m in zip(q, qm) if m]
        response = [t for t, m in zip(r, rm) if m]
        if not response or response[-1] != eos_id:
            response.append(eos_id)
        rows.append(prompt + response)
    return rows


def plain_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` as plain text: "<|endoftext|>" written by the policy must not become a real EOS here."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def text_rows(tokenizer, prompt_ids: Sequence[list[int]], responses: Sequence[str], frame: PairTemplate | None = None,
              max_length: int | None = None) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token rows for a reward model with its own vocabulary, from its prompt ids and the response
    texts, and their token types (None for a decoder): prompt ids + response ids + EOS; for an
    encoder (`frame`) the framed pair, truncated to `max_length` as in RM training."""
    if frame is None:
        return [list(p) + plain_ids(tokenizer, r) + [tokenizer.eos_token_id] for p, r in zip(prompt_ids, responses)], None
    rows, types = [], []
    for p, r in zip(prompt_ids, responses):
        prompt, response = list(p), plain_ids(tokenizer, r)
        if max_length is not None:
            prompt, (response,), _ = fit_to_length(prompt, [response], max_length - frame.num_special)
        ids, token_types = frame.build(prompt, response)
        rows.append(ids)
        types.append(token_types)
    return rows, types


@dataclass(frozen=True)
class RewardMember:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    mean: float  # score normalisation stored with the checkpoint (rlhfkit_score_mean / _std)
    std: float
    reads_policy_ids: bool  # same vocabulary as the policy: score the sampled ids as they are
    frame: PairTemplate | None = None  # an encoder's pair framing (rlhfkit.data.pairs); None for a decoder
    max_length: int | None = None  # an encoder's positions: framed pairs are truncated to fit

    def text_rows(self, prompt_ids: Sequence[list[int]], responses: Sequence[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        return text_rows(self.tokenizer, prompt_ids, responses, self.frame, self.max_length)


class RewardModelEnsemble:
    """One or more `AutoModelForSequenceClassification` reward models, frozen, dropout off.

    `policy_tokenizer` (PPO) lets members with the policy's vocabulary score sampled ids directly
    (`score_rollout`); `score(prompts, responses)` tokenizes text, for evaluation and labelling.
    `batch_size` rows go through a member at a time, independent of PPO's mini-batch size.
    `prompt_records` maps a policy-rendered prompt text to its record, so a member with its own
    tokenizer reads the prompt rendered its own way (a text it does not map is read as it is)."""

    def __init__(self, paths: Sequence[str], cfg: RewardSourceSection, device: torch.device, dtype: str = "fp32",
                 batch_size: int = 64, policy_tokenizer: PreTrainedTokenizerBase | None = None,
                 prompt_records: Mapping[str, Any] | None = None):
        self.cfg = cfg
        self.prompt_records = dict(prompt_records or {})
        self.device = device
        self.batch_size = batch_size
        self.members: list[RewardMember] = []
        for i, path in enumerate(paths):
            section = ModelSection(name_or_path=path, dtype=dtype)
            where = f"ppo.reward.model_paths[{i}]"
            tokenizer = load_tokenizer(section, where, encoder_ok=True)
            model = freeze(disable_dropout(load_reward_model(section, tokenizer, where, fresh_head=False))).to(device)
            mean = float(getattr(model.config, "rlhfkit_score_mean", 0.0))
            std = float(getattr(model.config, "rlhfkit_score_std", 1.0)) or 1.0
            frame = pair_template(tokenizer) if is_encoder_tokenizer(tokenizer) else None
            shared = policy_tokenizer is not None and frame is None and same_vocabulary(tokenizer, policy_tokenizer)
            if policy_tokenizer is not None and not shared:
                what = ("an encoder: it scores the (prompt, response) text pair" if frame else
                        "of another vocabulary than the policy: it scores the decoded response text")
                console.print(f"\\[ppo] {escape(where)} is {what}, re-tokenized with its own tokenizer", highlight=False)
            self.members.append(RewardMember(model, tokenizer, mean, std, shared, frame, context_length(model)))

    @torch.no_grad()
    def _score_rows(self, member: RewardMember, rows: list[list[int]], types: list[list[int]] | None = None) -> torch.Tensor:
        """(B,) raw scores of token rows (and an encoder's token types), right-padded `batch_size` rows at a time."""
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(len(row) for row in chunk)
            ids = torch.full((len(chunk), width), member.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            token_types = torch.zeros_like(ids)
            for i, row in enumerate(chunk):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                if types is not None:
                    token_types[i, : len(row)] = torch.tensor(types[start + i])
            given = token_types.to(self.device) if member.frame is not None and member.frame.uses_token_types else None
            out.append(sequence_scores(member.model, ids.to(self.device), mask.to(self.device), given,
                                       encoder=member.frame is not None).float().cpu())
        return torch.cat(out)

    def _combine(self, raw_scores: list[torch.Tensor]) -> ScoredBatch:
        members = [(raw - m.mean) / m.std if self.cfg.normalize else raw for raw, m in zip(raw_scores, self.members)]
        stacked = torch.stack(members)
        return ScoredBatch(combine_scores(stacked, self.cfg.ensemble, self.cfg.uncertainty_penalty), stacked)

    def score(self, prompts: list[str], responses: list[str]) -> ScoredBatch:
        """Score texts, each member with its own tokenizer (prompt ids + response ids + EOS; an encoder: the pair)."""
        return self._combine([self._score_rows(m, *m.text_rows(self._prompt_ids(m, prompts), responses))
                              for m in self.members])

    def _prompt_ids(self, member: RewardMember, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's ids in `member`'s tokenizer: from its record, rendered and encoded as the RM stage
        does (its own chat template, whose markers stay special; chat templates differ between
        tokenizers), else the text itself, as plain text."""
        records = [self.prompt_records.get(p) for p in prompts]
        return [plain_ids(member.tokenizer, p) if r is None else encode_prompt(member.tokenizer, r)
                for p, r in zip(prompts, records)]

    def score_rollout(self, rollout) -> ScoredBatch:
        """Score sampled episodes: the exact ids for members with the policy's vocabulary, text otherwise."""
        raw = []
        for member in self.members:
            if member.reads_policy_ids:
                rows = rm_rows_from_ids(rollout.query_ids, rollout.query_mask, rollout.response_ids,
                                        rollout.response_mask, member.tokenizer.eos_token_id)
                raw.append(self._score_rows(member, rows))
            else:
                raw.append(self._score_rows(member, *member.text_rows(self._prompt_ids(member, rollout.prompts),
                                                                      rollout.responses)))
        return self._combine(raw)


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

    def score_rollout(self, rollout) -> ScoredBatch:
        return self.score(rollout.prompts, rollout.responses)

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
    """Clip the combined scores, then apply the missing-EOS penalty. In this order the penalty always
    bites: clipped afterwards, a cut-off response the RM scores above clip + penalty would earn the
    same capped reward as a finished one, and running to the length budget would cost nothing
    (the hack the penalty exists to stop). The final range is [-clip - penalty, clip]."""
    scores = batch.scores.clone()
    if cfg.clip is not None:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    if cfg.missing_eos_penalty is not None:
        scores = scores - cfg.missing_eos_penalty * (~ended.cpu()).float()
    return scores
