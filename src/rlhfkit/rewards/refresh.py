"""Reward-model refresh (iterated RLHF): re-fit the proxy where the policy now samples.

The reward model learned from responses of the SFT model. PPO moves the policy away from them,
into text the RM never saw, where its errors can be exploited (Gao et al. 2022). Refreshing the
RM on comparisons of the *current* policy's responses is the defence used by Stiennon et al. 2020
(§3.1, several rounds of collection) and Bai et al. 2022 ("iterated online RLHF").
Every `ppo.reward_refresh.every` iterations:

  1. sample     two responses per prompt from the current policy (PPO's sampling settings)
  2. label      by the labeler: the task's annotators, a `module:function`, or a person (`file`)
  3. measure    the current RM's accuracy on the fresh pairs: how far off its training
                distribution the policy has moved (a signal that needs no gold judge)
  4. fine-tune  every ensemble member on the new pairs plus `replay_pairs` old ones (so it does
                not forget), with the RM stage itself; each round in ppo/refresh/round-K/
  5. swap       PPO goes on with the refreshed members; the round is an event on the plots

With `labeler: file` step 2 is a person: the pairs go to round-K/to_label.jsonl with
"preferred": "?", training checkpoints and stops (exit code 4); once every "?" is "a", "b" or
"tie", `--resume` reads the labels and goes on. `labeler: web` stops the same way; the person labels
the pairs in the browser (`rlhfkit label serve --file round-K/to_label.jsonl`) and `--resume` reads
the majority of the votes from that project (label/loop.py).

The refresh runs with its own seeds inside a saved-and-restored RNG state, so PPO's sampling
stream is the same with and without it (until the new reward changes the policy).
"""

from __future__ import annotations

import json
import os
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import RunConfig
from rlhfkit.data.records import PreferenceExample, PromptExample, load_records
from rlhfkit.rewards.sources import import_function

STAGE_DIR_TOKEN = "{stage_dir}"

Labeler = Callable[[list[str], list[str], list[str]], Sequence["bool | None"]]
PairSampler = Callable[[list[int]], tuple[list[str], list[str], list[str]]]

LABELS_NEEDED_EXIT_CODE = 4


class LabelsNeeded(Exception):
    """Fresh pairs wait for a person's labels; the run is checkpointed and continues with --resume."""

    exit_code = LABELS_NEEDED_EXIT_CODE

    def __init__(self, path: Path, count: int):
        self.path = path
        super().__init__(f"{count} response pairs wait for labels in {path}: replace \"preferred\": \"?\" by \"a\", "
                         f"\"b\" or \"tie\" on every line, or label them in the browser with `rlhfkit label serve --file "
                         f"{path}`, then continue with --resume")


def import_labeler(spec: str) -> Labeler:
    return import_function(spec, "ppo.reward_refresh.labeler")


def preference_records(prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                       preferred_a: Sequence[bool | None]) -> list[dict[str, str]]:
    """{prompt, chosen, rejected} for every pair with a stated preference (None: left out).

    Pairs with identical responses carry no preference, and a pair where the policy answered with
    nothing (EOS at once, or only whitespace) cannot be a preference record: both are left out."""
    if len(preferred_a) != len(prompts):
        raise ConfigError(f"ppo.reward_refresh.labeler returned {len(preferred_a)} labels for {len(prompts)} pairs")
    records = []
    for prompt, a, b, pref in zip(prompts, responses_a, responses_b, preferred_a):
        if pref is None or a == b or not a.strip() or not b.strip():
            continue
        chosen, rejected = (a, b) if pref else (b, a)
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def file_record(record: dict[str, str], prompt: PromptExample | None) -> dict[str, Any]:
    """A {prompt, chosen, rejected} pair with a policy-rendered prompt, as a preference JSONL row:
    in chat form when the prompt was a chat one (its messages; the replies as assistant turns), else as is."""
    if prompt is None or prompt.messages is None:
        return dict(record)
    return replay_record(PreferenceExample(prompt=None, chosen=record["chosen"], rejected=record["rejected"],
                                           messages=list(prompt.messages)))


def replay_record(pair: PreferenceExample) -> dict[str, Any]:
    """A loaded preference pair back as a JSONL row in its own form (chat or text, with its soft label)."""
    if pair.messages is not None:
        row: dict[str, Any] = {"prompt": list(pair.messages),
                               "chosen": [{"role": "assistant", "content": pair.chosen}],
                               "rejected": [{"role": "assistant", "content": pair.rejected}]}
    else:
        row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.p_chosen is not None:
        row["p_chosen"] = pair.p_chosen
    if pair.margin is not None:
        row["margin"] = pair.margin
    return row


def pair_accuracy(score: Callable[[list[str], list[str]], torch.Tensor], records: Sequence[dict[str, str]]) -> float | None:
    """Fraction of labelled pairs the scorer ranks as the labeler did."""
    if not records:
        return None
    prompts = [r["prompt"] for r in records]
    chosen = score(prompts, [r["chosen"] for r in records])
    rejected = score(prompts, [r["rejected"] for r in records])
    return float((chosen > rejected).float().mean())


@contextmanager
def preserved_rng():
    """Run a block with its own seeding without moving Python's, NumPy's or torch's streams."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class RewardRefresher:
    """Owns the refresh schedule, the rounds' files and the current reward-model paths (checkpointed)."""

    def __init__(self, cfg: RunConfig, stage_dir: Path, task_labeler: Labeler | None,
                 prompt_records: Mapping[str, PromptExample] | None = None):
        """`task_labeler`: the bundled task's annotators, used when `labeler: task`. `prompt_records`:
        policy-rendered prompt text -> its prompt record, so pairs on chat prompts are written in chat
        form (the RM stage then renders them as it rendered its original data)."""
        self.cfg = cfg
        self.prompt_records = dict(prompt_records or {})
        self.section = cfg.ppo.reward_refresh
        self.dir = stage_dir / "refresh"
        spec = self.section.labeler
        self.labeler = task_labeler if spec == "task" else None if spec in ("file", "web") else import_labeler(spec)
        self.round = 0
        self.model_paths = list(cfg.ppo.reward.model_paths)
        self.pending_iteration: int | None = None  # file labeler: pairs written, labels awaited

    # ---- schedule and state -------------------------------------------------------------------
    def due(self, iteration: int) -> bool:
        every = self.section.every
        return every is not None and iteration % every == 0 and iteration < self.cfg.ppo.num_iterations

    def state_dict(self) -> dict[str, Any]:
        # Refreshed members live under the stage directory: stored relative to it, so a moved run resumes.
        stage_dir = os.path.realpath(self.dir.parent)
        paths = [os.path.join(STAGE_DIR_TOKEN, os.path.relpath(os.path.realpath(p), stage_dir))
                 if os.path.realpath(p).startswith(stage_dir + os.sep) else p for p in self.model_paths]
        return {"round": self.round, "model_paths": paths, "pending_iteration": self.pending_iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        prefix = STAGE_DIR_TOKEN + os.sep
        self.model_paths = [str(self.dir.parent / p.removeprefix(prefix)) if p.startswith(prefix) else p
                            for p in state["model_paths"]]
        self.pending_iteration = state.get("pending_iteration")

    def _round_dir(self, k: int) -> Path:
        return self.dir / f"round-{k}"

    # ---- one round ----------------------------------------------------------------------------
    def start(self, iteration: int, num_prompts: int, sample_pairs: PairSampler) -> tuple[list[dict[str, str]], dict[str, Any]] | None:
        """Steps 1–2: sample and label round K's pairs. None when a person must label them first
        (file labeler: the pairs are written and `pending_iteration` set; the caller checkpoints and stops)."""
        k = self.round + 1
        with preserved_rng():
            seed = self.cfg.seed + 7919 * k
            torch.manual_seed(seed)
            order = torch.randperm(num_prompts, generator=torch.Generator().manual_seed(seed)).tolist()
            picked = [order[i % len(order)] for i in range(self.section.num_pairs)]
            prompts, a, b = sample_pairs(picked)
        info = {"iteration": iteration, "sampled_pairs": len(prompts)}
        if self.section.labeler in ("file", "web"):  # a person labels them while the run is stopped
            self._write_to_label(self._round_dir(k) / "to_label.jsonl", prompts, a, b)
            self.pending_iteration = iteration
            return None
        labels = self.labeler(list(prompts), list(a), list(b))
        return preference_records(prompts, a, b, list(labels)), info

    def labelled_by_person(self) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """Step 2 for the file labeler, on --resume: the filled-in round-K/to_label.jsonl."""
        path = self._round_dir(self.round + 1) / "to_label.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if self.section.labeler == "web":
            from rlhfkit.label.loop import labels_from_project

            for row, label in zip(rows, labels_from_project(path, rows)):
                row["preferred"] = label
        waiting = sum(row.get("preferred") == "?" for row in rows)
        if waiting:
            raise LabelsNeeded(path, waiting)
        prompts, a, b, prefs = [], [], [], []
        for line_no, row in enumerate(rows, 1):
            pref = row.get("preferred")
            if pref not in ("a", "b", "tie"):
                raise ConfigError(f"{path}:{line_no}: field 'preferred' must be \"a\", \"b\" or \"tie\", got {pref!r}")
            prompts.append(row["prompt"])
            a.append(row["response_a"])
            b.append(row["response_b"])
            prefs.append(None if pref == "tie" else pref == "a")
        info = {"iteration": self.pending_iteration, "sampled_pairs": len(prompts)}
        return preference_records(prompts, a, b, prefs), info

    @staticmethod
    def _write_to_label(path: Path, prompts, a, b) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:  # "?": not labelled yet
            for prompt, ra, rb in zip(prompts, a, b):
                handle.write(json.dumps({"prompt": prompt, "response_a": ra, "response_b": rb, "preferred": "?"},
                                        ensure_ascii=False) + "\n")

    def finish(self, new_records: list[dict[str, str]], info: dict[str, Any],
               score: Callable[[list[str], list[str]], torch.Tensor]) -> dict[str, Any]:
        """Steps 3–4: accuracy of the current RM on the fresh pairs, then fine-tune every member on
        new + replayed pairs. Returns the round's metrics; `model_paths` point at the new members."""
        from rlhfkit.stages import rm as rm_stage

        k = self.round + 1
        round_dir = self._round_dir(k)
        round_dir.mkdir(parents=True, exist_ok=True)
        if not new_records:
            raise ConfigError(f"reward refresh round {k}: the labeler stated no preference on any of the {info['sampled_pairs']} pairs")
        accuracy_before = pair_accuracy(score, new_records)
        replay = self._replay(k, len(new_records))
        new_rows = [file_record(r, self.prompt_records.get(r["prompt"])) for r in new_records]
        with open(round_dir / "preferences.jsonl", "w", encoding="utf-8") as handle:
            for row in new_rows + replay:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (round_dir / "new_pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new_rows), encoding="utf-8")

        new_paths, held_out = [], []
        with preserved_rng():
            for j, path in enumerate(self.model_paths):
                member_cfg = self._member_config(path, round_dir / "preferences.jsonl", seed=self.cfg.seed + 1000 * k + j)
                out = rm_stage.run(member_cfg, round_dir / f"rm-{j}", resume=True)  # a finished member is reused
                new_paths.append(str(out.checkpoint))
                if "eval/accuracy" in out.metrics:
                    held_out.append(out.metrics["eval/accuracy"])
        self.model_paths = new_paths
        self.round = k
        self.pending_iteration = None
        metrics = {
            "refresh/round": float(k),
            "refresh/new_pairs": float(len(new_records)),
            "refresh/replayed_pairs": float(len(replay)),
            "refresh/rm_accuracy_on_policy_pairs": accuracy_before,
        }
        if held_out:
            metrics["refresh/rm_held_out_accuracy"] = sum(held_out) / len(held_out)
        metrics["event"] = (f"RM refresh {k}: {len(new_records)} new pairs from the policy (+{len(replay)} replayed); "
                            f"old RM agreed with labels on {accuracy_before:.0%}")
        (round_dir / "round.json").write_text(json.dumps({**info, **metrics}, indent=2))
        return metrics

    # ---- helpers ------------------------------------------------------------------------------
    def _replay(self, k: int, n_new: int) -> list[dict[str, Any]]:
        """`replay_pairs` old pairs: the original RM data and the new pairs of earlier rounds, seeded,
        as JSONL rows (chat pairs stay in chat form, soft labels stay soft)."""
        pool: list[dict[str, Any]] = []
        if self.section.old_data:
            pool += [replay_record(p) for p in load_records(self.section.old_data, "preferences")]
        for earlier in range(1, k):
            path = self._round_dir(earlier) / "new_pairs.jsonl"
            pool += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rng = random.Random(zlib.crc32(f"{self.cfg.seed}/{k}/{n_new}".encode()))
        return rng.sample(pool, min(self.section.replay_pairs, len(pool)))

    def _member_config(self, model_path: str, data_path: Path, seed: int) -> RunConfig:
        """The RM stage's config for fine-tuning one member: its current weights, this round's pairs."""
        rm = self.cfg.rm
        data = rm.data.model_copy(update={"path": str(data_path), "eval_path": self.section.eval_data, "eval_fraction": 0.0,
                                          "max_examples": None})
        member = rm.model_copy(update={
            "model": rm.model.model_copy(update={"name_or_path": model_path}),
            "data": data,
            "optim": self.section.optim,
            # no progress bar of its own: PPO's is live, and rich shows one live display at a time
            "logging": rm.logging.model_copy(update={"eval_every": None, "tensorboard": False, "report_to": [], "progress": False}),
        })
        return self.cfg.model_copy(update={"seed": seed, "rm": member})
