"""The bundled default task: steer a small fortune-cookie language model towards upbeat text.

What the pipeline asks of a task, in order:
  prepare()                 base model (built once, cached) + SFT data + PPO prompts
  collect_preferences(sft)  two responses per prompt sampled from the SFT model, labelled by
                            simulated annotators (noisy Bradley–Terry draws on the gold score)
  label_preferences(...)    the same annotators, for PPO's reward-model refresh
  ppo_observer()            per-iteration gold score of PPO's responses (for the
                            over-optimisation curve; never part of the reward)
  gold_judge, eval_prompts, rm_gold_accuracy   for evaluation only

The gold "human" judgement is VADER sentiment of the response. The reward model only ever sees
the annotators' labels, so it is a *proxy*, and PPO can over-optimise it as in Gao et al. 2022.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.metric_names import M
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import RewardSourceSection, TaskSection
from rlhfkit.data.records import PromptExample, load_records
from rlhfkit.models.load import disable_dropout, freeze, load_causal_lm, load_tokenizer
from rlhfkit.rollout.types import Rollout
from rlhfkit.tasks.fortunes.base_model import BaseModelSpec, build_base_model, load_pretrain_info
from rlhfkit.tasks.fortunes.corpus import load_fortunes, make_prompt_records, make_sft_records, split_corpus, write_jsonl
from rlhfkit.tasks.fortunes.gold import DEFAULT_TEMPERATURES, SimulatedAnnotator, VaderGold, collect_preference_pairs, label_pairs
from rlhfkit.training.progress import StageProgress

HELD_OUT_PAIR_FRACTION = 0.1


@dataclass(frozen=True)
class Prepared:
    base_model: Path
    sft_path: Path
    ppo_prompts_path: Path
    info: dict[str, Any]


class FortunesTask:
    def __init__(self, cfg: TaskSection, task_dir: Path, seed: int):
        self.cfg = cfg
        self.dir = Path(task_dir)
        self.seed = seed
        self.spec = BaseModelSpec.quick() if cfg.base_model == "quick" else BaseModelSpec.default()
        self.gold = VaderGold()
        self._splits: dict[str, list[str]] | None = None

    def splits(self) -> dict[str, list[str]]:
        # The split seed is the base model's: the held-out prompts were never seen in pretraining.
        if self._splits is None:
            self._splits = split_corpus(load_fortunes(self.spec.max_chars), seed=self.spec.split_seed)
        return self._splits

    def prepare(self) -> Prepared:
        self.dir.mkdir(parents=True, exist_ok=True)
        with StageProgress("pretraining base model (cached after the first run)", self.spec.train_steps) as bar:
            base = build_base_model(self.spec, progress=lambda step, total, loss: bar.advance(loss=loss))
        splits = self.splits()
        rng = random.Random(self.seed)
        sft = make_sft_records(splits["sft"], rng)[: self.cfg.num_sft_examples]
        prompts = make_prompt_records(splits["ppo_prompts"], rng)[: self.cfg.num_ppo_prompts]
        sft_path = write_jsonl(sft, self.dir / "sft.jsonl")
        ppo_path = write_jsonl(prompts, self.dir / "ppo_prompts.jsonl")
        write_jsonl(make_prompt_records(splits["eval_prompts"], random.Random(self.seed + 1)), self.dir / "eval_prompts.jsonl")
        info = {"base_model": str(base), "base_model_info": load_pretrain_info(base), "sft_examples": len(sft),
                "ppo_prompts": len(prompts), "corpus_entries": sum(len(v) for v in splits.values())}
        return Prepared(base, sft_path, ppo_path, info)

    def collect_preferences(self, sft_checkpoint: Path) -> tuple[Path, dict[str, Any]]:
        """Sample pairs from the SFT model, label them; returns the train file (held-out file beside it)."""
        section = ModelSection(name_or_path=str(sft_checkpoint))
        tokenizer = load_tokenizer(section, "task")
        tokenizer.padding_side = "left"
        model = freeze(disable_dropout(load_causal_lm(section, tokenizer, "task")))
        rng = random.Random(self.seed + 2)
        prompts = [r["prompt"] for r in make_prompt_records(self.splits()["pref_prompts"], rng)]
        prompts = [prompts[i % len(prompts)] for i in range(self.cfg.num_preference_pairs)]
        torch.manual_seed(self.seed)
        with StageProgress("preference pairs (sampled)", len(prompts)) as bar:
            pair_prompts, a, b = collect_preference_pairs(
                model, tokenizer, prompts, n_pairs=len(prompts), temperature=1.0,
                max_new_tokens=self.cfg.response_tokens, seed=self.seed, batch_size=64, on_batch=bar.advance)
            annotators = self.annotators()
            # Pairs whose gold scores tie (two sentiment-free texts) are "no preference" answers and are
            # dropped, as ties are left out of reward-model training in Stiennon 2020 / InstructGPT.
            with bar.phase("labelling"):
                records, report = label_pairs(pair_prompts, a, b, self.gold, annotators, self.seed, skip_gold_ties=True)
        # A response that is only EOS decodes to "": not a preference anyone can state.
        kept = [r for r in records if r["chosen"].strip() and r["rejected"].strip()]
        report["n_skipped_empty"] = len(records) - len(kept)
        records = kept
        n_eval = max(1, int(len(records) * HELD_OUT_PAIR_FRACTION))
        write_jsonl(records[n_eval:], self.dir / "preferences.jsonl")
        write_jsonl(records[:n_eval], self.dir / "preferences_eval.jsonl")
        (self.dir / "annotation_report.json").write_text(json.dumps(report, indent=2))
        return self.dir / "preferences.jsonl", report

    def annotators(self) -> list[SimulatedAnnotator]:
        # Bradley–Terry temperatures on the VADER scale (gold.DEFAULT_TEMPERATURES, tuned to human
        # agreement levels), cycled when more annotators are asked for; each has its own seed.
        return [SimulatedAnnotator(f"annotator-{i}", DEFAULT_TEMPERATURES[i % len(DEFAULT_TEMPERATURES)], self.seed + i)
                for i in range(self.cfg.num_annotators)]

    def label_preferences(self, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[bool | None]:
        """The annotators' majority vote per pair (True: A preferred; None: identical or a gold tie).

        The labeller of PPO's reward-model refresh. Its seed comes from the pairs themselves, so a
        resumed run labels the same pairs the same way."""
        seed = zlib.crc32("\x1f".join([*prompts, *responses_a, *responses_b]).encode()) ^ self.seed
        records, _ = label_pairs(prompts, responses_a, responses_b, self.gold, self.annotators(), seed, skip_gold_ties=True)
        labels: list[bool | None] = []
        kept = iter(records)  # label_pairs keeps the input order and drops identical pairs and gold ties
        record = next(kept, None)
        for prompt, a, b in zip(prompts, responses_a, responses_b):
            if record is not None and record["prompt"] == prompt and {record["chosen"], record["rejected"]} == {a, b} and a != b:
                labels.append(record["chosen"] == a)
                record = next(kept, None)
            else:
                labels.append(None)
        return labels

    @property
    def held_out_preferences(self) -> Path:
        return self.dir / "preferences_eval.jsonl"

    def gold_judge(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.gold.score(responses)

    def ppo_observer(self):
        def observe(rollout: Rollout) -> dict[str, float]:
            scores = self.gold.score(rollout.responses)
            return {M.GOLD_SCORE: sum(scores) / max(len(scores), 1)}
        return observe

    def eval_prompts(self) -> list[PromptExample]:
        return load_records(self.dir / "eval_prompts.jsonl", "prompts")

    def rm_gold_accuracy(self, rm_paths: list[str], reward: RewardSourceSection, device: torch.device) -> float | None:
        """Accuracy of the reward PPO optimises (one RM, or the ensemble combined by `reward.ensemble`)
        against *noise-free* gold preferences on held-out pairs (gold ties skipped)."""
        from rlhfkit.evaluation.policy_eval import gold_preference_accuracy
        from rlhfkit.rewards.sources import RewardModelEnsemble

        if not self.held_out_preferences.exists():
            return None
        pairs = load_records(self.held_out_preferences, "preferences")
        # The combination rule and normalisation of PPO's reward; the EOS penalty and clip do not
        # change which of two complete responses ranks higher, so they are left out.
        rm = RewardModelEnsemble(rm_paths, reward.model_copy(update={"missing_eos_penalty": None, "clip": None}), device)
        prompts = [p.prompt for p in pairs]
        chosen = rm.score(prompts, [p.chosen for p in pairs]).scores
        rejected = rm.score(prompts, [p.rejected for p in pairs]).scores
        gold_c, gold_r = self.gold.score([p.chosen for p in pairs]), self.gold.score([p.rejected for p in pairs])
        return gold_preference_accuracy(chosen.tolist(), rejected.tolist(), gold_c, gold_r)
