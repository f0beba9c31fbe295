"""The bundled assistant task: RLHF on a real pretrained chat model, SmolLM2-135M-Instruct.

The same interface as the fortunes task (tasks/fortunes/task.py), on chat data:
  prepare()                 the real model (bundled:smollm2-135m-instruct, converted once) + SFT
                            dialogues and PPO prompts from chatterbot-corpus, in chat form
  collect_preferences(sft)  two replies per question sampled from the SFT model, labelled by
                            simulated annotators (noisy Bradley–Terry draws on the gold score),
                            written as conversational preference records
  ppo_observer()            per-iteration gold score of PPO's replies (never part of the reward)
  gold_judge, eval_prompts, rm_gold_accuracy   for evaluation only

The gold (tasks/assistant/gold.py) scores relevance × fluency × distinctness × novelty, so
degenerate text cannot earn it. Its fluency reference is the original converted model, not the
SFT checkpoint. Prompts reach the gold as the policy saw them (chat-rendered); the task maps each
rendered prompt back to its question.

`label_preferences` labels PPO's reward-model refresh pairs (`ppo.reward_refresh`) the same way.
Not yet: annotator noise tuned to human agreement.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import TaskSection
from rlhfkit.data.records import PromptExample, load_records
from rlhfkit.data.templates import render_prompt
from rlhfkit.models.gguf import smollm2_instruct
from rlhfkit.models.load import disable_dropout, freeze, load_causal_lm, load_tokenizer
from rlhfkit.rollout.types import Rollout
from rlhfkit.tasks.assistant.corpus import load_conversations, prompt_record, sft_record, split_conversations
from rlhfkit.tasks.fortunes.corpus import write_jsonl
from rlhfkit.metric_names import M
from rlhfkit.tasks.fortunes.gold import SimulatedAnnotator, agreement_report, collect_preference_pairs
from rlhfkit.tasks.fortunes.task import HELD_OUT_PAIR_FRACTION, Prepared
from rlhfkit.training.progress import StageProgress

#: Bradley–Terry temperatures on the gold's [0, 1] scale (answers ~0.3–0.6, degenerate text ~0).
#: Not tuned to human agreement yet, unlike the fortunes task's.
TEMPERATURES = (0.03, 0.06, 0.12)
#: Prompts per `generate` call when sampling preference pairs (two replies each). Sampling is
#: compute-bound on CPU; 64 prompts took 1.13 s a prompt against 1.67 s in batches of 16 (SmolLM2,
#: 32 new tokens, one thread on a shared CPU, 2026-12-01).
GENERATION_BATCH = 64


class AssistantTask:
    def __init__(self, cfg: TaskSection, task_dir: Path, seed: int):
        self.cfg, self.dir, self.seed = cfg, Path(task_dir), seed
        self._splits: dict[str, list[list[str]]] | None = None
        self._gold = None
        self._questions: dict[str, str] | None = None

    # ------------------------------------------------------------------ data

    def splits(self) -> dict[str, list[list[str]]]:
        if self._splits is None:
            self._splits = split_conversations(load_conversations())
        return self._splits

    def prepare(self) -> Prepared:
        self.dir.mkdir(parents=True, exist_ok=True)
        base = smollm2_instruct()
        splits = self.splits()
        sft = [sft_record(c) for c in splits["sft"]][: self.cfg.num_sft_examples]
        prompts = [prompt_record(c) for c in splits["ppo_prompts"]][: self.cfg.num_ppo_prompts]
        sft_path = write_jsonl(sft, self.dir / "sft.jsonl")
        ppo_path = write_jsonl(prompts, self.dir / "ppo_prompts.jsonl")
        write_jsonl([prompt_record(c) for c in splits["eval_prompts"]], self.dir / "eval_prompts.jsonl")
        info = {"base_model": str(base), "sft_examples": len(sft), "ppo_prompts": len(prompts),
                "conversations": sum(len(v) for v in splits.values())}
        return Prepared(base, sft_path, ppo_path, info)

    def _tokenizer(self):
        return load_tokenizer(ModelSection(name_or_path=str(smollm2_instruct())), "task")

    def question_of(self, rendered: str) -> str:
        """The user question behind a chat-rendered prompt (the text itself when it is not one of ours)."""
        if self._questions is None:
            tokenizer = self._tokenizer()
            self._questions = {}
            for part in self.splits().values():
                for conversation in part:
                    example = PromptExample(prompt=None, messages=prompt_record(conversation)["messages"])
                    self._questions[render_prompt(tokenizer, example)] = conversation[0]
        return self._questions.get(rendered, rendered)

    # ------------------------------------------------------------------ gold and annotators

    @property
    def gold(self):
        if self._gold is None:
            from rlhfkit.tasks.assistant.gold import AssistantGold, MiniLMEmbedder, ReferenceNLL

            section = ModelSection(name_or_path=str(smollm2_instruct()))
            tokenizer = load_tokenizer(section, "task.gold")
            reference = freeze(disable_dropout(load_causal_lm(section, tokenizer, "task.gold")))
            self._gold = AssistantGold(MiniLMEmbedder(), ReferenceNLL(reference, tokenizer))
        return self._gold

    def gold_judge(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.gold.score([self.question_of(p) for p in prompts], responses)

    def annotators(self) -> list[SimulatedAnnotator]:
        return [SimulatedAnnotator(f"annotator-{i}", TEMPERATURES[i % len(TEMPERATURES)], self.seed + i)
                for i in range(self.cfg.num_annotators)]

    def _votes(self, questions: list[str], a: list[str], b: list[str], seed: str) -> list[tuple[list[bool], bool] | None]:
        """Per pair: each annotator's vote (True: A preferred), drawn on the gold scores, and whether
        gold prefers A; None for a pair that carries no preference (identical or empty replies, a gold
        tie). `seed` keys the draws."""
        keep = [i for i in range(len(a)) if a[i] != b[i] and a[i].strip() and b[i].strip()]
        scores_a = self.gold.score([questions[i] for i in keep], [a[i] for i in keep])
        scores_b = self.gold.score([questions[i] for i in keep], [b[i] for i in keep])
        annotators = self.annotators()
        rngs = [random.Random(f"{seed}/{x.seed}/{x.name}") for x in annotators]
        out: list[tuple[list[bool], bool] | None] = [None] * len(a)
        for i, sa, sb in zip(keep, scores_a, scores_b):
            if sa != sb:
                out[i] = ([x.prefers_first(sa, sb, r) for x, r in zip(annotators, rngs)], sa > sb)
        return out

    def _label(self, questions: list[str], a: list[str], b: list[str]) -> tuple[list[dict], dict[str, Any]]:
        """Majority votes of the annotators on the gold scores, the vote counts kept (soft labels);
        identical replies and gold ties dropped."""
        annotators = self.annotators()
        pair_votes = self._votes(questions, a, b, seed=str(self.seed))
        records, votes_all, gold_pref = [], [], []
        for i, drawn in enumerate(pair_votes):
            if drawn is None:
                continue
            votes, gold_prefers_a = drawn
            a_wins = sum(votes) * 2 > len(votes)
            chosen, rejected = (a[i], b[i]) if a_wins else (b[i], a[i])
            n_chosen = sum(votes) if a_wins else len(votes) - sum(votes)
            # The vote counts travel with the pair, as in the fortunes task: the reward model reads
            # them as a soft target (2 of 3 is less sure than 3 of 3; rlhfkit.data.records, `votes`).
            records.append({"prompt": [{"role": "user", "content": questions[i]}],
                            "chosen": [{"role": "assistant", "content": chosen}],
                            "rejected": [{"role": "assistant", "content": rejected}],
                            "votes": {"chosen": n_chosen, "rejected": len(votes) - n_chosen}})
            votes_all.append(votes)
            gold_pref.append(gold_prefers_a)
        report = agreement_report(annotators, votes_all, gold_pref)
        report.update(n_pairs=len(records), n_input=len(a), n_skipped=len(a) - len(records),
                      annotator_temperatures={x.name: x.temperature for x in annotators})
        return records, report

    def collect_preferences(self, sft_checkpoint: Path) -> tuple[Path, dict[str, Any]]:
        """Sample pairs from the SFT model, label them; returns the train file (held-out file beside it)."""
        section = ModelSection(name_or_path=str(sft_checkpoint))
        tokenizer = load_tokenizer(section, "task")
        model = freeze(disable_dropout(load_causal_lm(section, tokenizer, "task")))
        conversations = self.splits()["pref_prompts"]
        questions = [conversations[i % len(conversations)][0] for i in range(self.cfg.num_preference_pairs)]
        rendered = [render_prompt(tokenizer, PromptExample(prompt=None, messages=[{"role": "user", "content": q}]))
                    for q in questions]
        with StageProgress("preference pairs (sampled)", len(rendered)) as bar:
            _, a, b = collect_preference_pairs(model, tokenizer, rendered, n_pairs=len(rendered), temperature=1.0,
                                               max_new_tokens=self.cfg.response_tokens, seed=self.seed, batch_size=GENERATION_BATCH,
                                               on_batch=bar.advance)
            with bar.phase("labelling (gold scores, annotators)"):
                records, report = self._label(questions, a, b)
        if len(records) < 2:
            raise ConfigError(f"task.num_preference_pairs={self.cfg.num_preference_pairs} left {len(records)} labelled "
                              "pairs (identical replies and gold ties are dropped): ask for more")
        n_eval = max(1, int(len(records) * HELD_OUT_PAIR_FRACTION))
        write_jsonl(records[n_eval:], self.dir / "preferences.jsonl")
        write_jsonl(records[:n_eval], self.dir / "preferences_eval.jsonl")
        (self.dir / "annotation_report.json").write_text(json.dumps(report, indent=2))
        return self.dir / "preferences.jsonl", report

    def label_preferences(self, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[bool | None]:
        """The annotators' majority vote per pair (True: A preferred; None: no preference), the
        labeller of PPO's reward-model refresh. Prompts arrive chat-rendered, as the policy saw them;
        the gold reads their questions. The draws are keyed by the pairs themselves, so a resumed run
        labels the same pairs the same way and each round gets fresh annotator noise."""
        questions = [self.question_of(p) for p in prompts]
        seed = f"{self.seed}/refresh/{zlib.crc32(chr(31).join([*prompts, *responses_a, *responses_b]).encode())}"
        return [None if drawn is None else sum(drawn[0]) * 2 > len(drawn[0])
                for drawn in self._votes(questions, list(responses_a), list(responses_b), seed)]

    @property
    def held_out_preferences(self) -> Path:
        return self.dir / "preferences_eval.jsonl"

    # ------------------------------------------------------------------ evaluation

    def ppo_observer(self):
        def observe(rollout: Rollout) -> dict[str, float]:
            scores = self.gold_judge(list(rollout.prompts), list(rollout.responses))
            return {M.GOLD_SCORE: sum(scores) / max(len(scores), 1)}
        return observe

    def eval_prompts(self) -> list[PromptExample]:
        return load_records(self.dir / "eval_prompts.jsonl", "prompts")

    def rm_gold_accuracy(self, rm_paths: list[str], reward, device: torch.device) -> float | None:
        """Accuracy of the reward PPO optimises (one RM, or the ensemble combined by `reward.ensemble`)
        against noise-free gold preferences on the held-out pairs (gold ties skipped), as the
        fortunes task measures it. The EOS penalty and the clip do not change which of two complete
        replies ranks higher, so they are left out."""
        from rlhfkit.evaluation.policy_eval import gold_preference_accuracy
        from rlhfkit.rewards.sources import RewardModelEnsemble

        if not self.held_out_preferences.exists():
            return None
        pairs = load_records(self.held_out_preferences, "preferences")
        tokenizer = self._tokenizer()
        rendered = [render_prompt(tokenizer, p) for p in pairs]
        questions = [p.messages[-1]["content"] for p in pairs]
        rm = RewardModelEnsemble(rm_paths, reward.model_copy(update={"missing_eos_penalty": None, "clip": None}), device,
                                 prompt_records=dict(zip(rendered, pairs)))
        chosen = rm.score(rendered, [p.chosen for p in pairs]).scores
        rejected = rm.score(rendered, [p.rejected for p in pairs]).scores
        gold_c, gold_r = self.gold.score(questions, [p.chosen for p in pairs]), self.gold.score(questions, [p.rejected for p in pairs])
        return gold_preference_accuracy(chosen.tolist(), rejected.tolist(), gold_c, gold_r)
