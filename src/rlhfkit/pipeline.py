"""`rlhfkit run`: SFT → reward model → PPO → evaluation → report, in one run directory.

Each stage's output feeds the next through the config: a model path left empty in a stage's
section means "the previous stage's checkpoint". With a bundled task (`task:` in the config,
the default preset), the task builds the base model and the data, labels preference pairs
sampled from the SFT model, and supplies a gold judge used only for evaluation.

Run directory:
    config.yaml  summary.json  report.html  plots/
    task/        data the task made (sft.jsonl, preferences.jsonl, prompts, annotation report)
    sft/ rm/ ppo/  each stage's HF checkpoint(s) and metrics.jsonl
    eval/        before.jsonl / after.jsonl (per held-out prompt), metrics.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from rlhfkit.config.load import ConfigError, save_resolved
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import RunConfig
from rlhfkit.data.records import load_records
from rlhfkit.data.tokenize import tokenize_prompts
from rlhfkit.data.templates import render_prompt
from rlhfkit.environment import environment
from rlhfkit.evaluation.during_ppo import HeldOutPrompts, check_held_out
from rlhfkit.evaluation.policy_eval import evaluate_policy, evaluation_generation, win_rate
from rlhfkit.models.load import check_model_source, disable_dropout, freeze, load_causal_lm, load_tokenizer
from rlhfkit.rewards.sources import RewardModelEnsemble
from rlhfkit.stages import ppo as ppo_stage
from rlhfkit.stages import rm as rm_stage
from rlhfkit.stages import sft as sft_stage
from rlhfkit.training.distributed import main_first
from rlhfkit.training.progress import console
from rlhfkit.training.resume import is_finished


def _with(cfg: RunConfig, dotted: str, value: Any) -> RunConfig:
    """A copy of cfg with one nested field replaced (re-validated); the original is untouched."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return cfg.model_copy(update={head: value})
    return cfg.model_copy(update={head: _with(getattr(cfg, head), rest, value)})


def validate_run(cfg: RunConfig) -> None:
    """Check every user-supplied file and model path before the first stage starts."""
    if "ppo" in cfg.stages:
        ppo_stage.validate_refresh(cfg.ppo, labeler_given=cfg.task is not None)
        check_held_out(cfg.ppo, task_given=cfg.task is not None)
    if cfg.task is not None:
        from rlhfkit.tasks.fortunes.base_model import default_cache_dir

        default_cache_dir()  # a cache path that is a file: one line before the run directory is made
        return  # the task makes its own data; its package is checked when it loads
    if "sft" in cfg.stages:
        sft_stage.validate(cfg)
    pairs: list = []
    if "rm" in cfg.stages:
        pairs = rm_stage.read_preference_data(cfg.rm, cfg.seed)[0]
        if cfg.rm.model.name_or_path or "sft" not in cfg.stages:
            check_model_source(cfg.rm.model, "rm.model")
    if "ppo" in cfg.stages:
        if not cfg.ppo.data.path:
            raise ConfigError("ppo.data.path is empty: give a JSONL file of {prompt} records")
        _warn_on_mixed_forms(cfg, pairs, load_records(cfg.ppo.data.path, "prompts", cfg.ppo.data.columns))
        if cfg.ppo.policy.name_or_path or "sft" not in cfg.stages:
            check_model_source(cfg.ppo.policy, "ppo.policy")
        if not (cfg.ppo.reward.model_paths or cfg.ppo.reward.callable) and "rm" not in cfg.stages:
            raise ConfigError("ppo.reward: give model_paths or callable (no rm stage in this run)")


def _warn_on_mixed_forms(cfg: RunConfig, pairs: list, prompts: list) -> None:
    """Chat prompts are rendered with the chat template; string preferences are not. An RM trained on
    one form and asked by PPO to score the other reads text it never saw: say so before any work."""
    if not pairs or not prompts:
        return
    chat_pairs, chat_prompts = pairs[0].messages is not None, prompts[0].messages is not None
    if chat_pairs != chat_prompts:
        form = {True: "chat (messages)", False: "plain-string"}
        console.print(f"[yellow]warning:[/] {escape(cfg.rm.data.path)} holds {form[chat_pairs]} preferences but "
                      f"{escape(cfg.ppo.data.path)} {form[chat_prompts]} prompts: the reward model is trained on text "
                      "rendered differently from what PPO asks it to score; give both in the same form "
                      "(docs: rlhfkit.data.records)", soft_wrap=True, highlight=False)


class Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        console.rule(f"[bold]{name}")
        try:
            return fn(*args, **kwargs)
        finally:
            self.times[name] = round(time.perf_counter() - start, 1)


def run_pipeline(cfg: RunConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Run the configured stages, evaluate, write summary.json and report.html; return the summary.

    With `resume`, a finished stage (its done.json) is not run again: its output comes back from
    disk; an unfinished one continues from its newest checkpoint."""
    validate_run(cfg)

    def start() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a resumed run keeps the config it started with until it finishes
            save_resolved(cfg, run_dir / "config.yaml")

    main_first(start)  # data-parallel runs: files are made and written by the main process alone
    timer = Timer()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "stages": {}, "wall_time": timer.times, "environment": environment()}
    task = None
    if cfg.task is not None:
        if cfg.task.name == "assistant":
            from rlhfkit.tasks.assistant.task import AssistantTask as Task
        else:
            from rlhfkit.tasks.fortunes.task import FortunesTask as Task

        task = Task(cfg.task, run_dir / "task", seed=cfg.seed)
        prepared = main_first(lambda: timer.run("task", task.prepare))
        cfg = _with(cfg, "sft.model.name_or_path", str(prepared.base_model))
        cfg = _with(cfg, "sft.data.path", str(prepared.sft_path))
        cfg = _with(cfg, "ppo.data.path", str(prepared.ppo_prompts_path))
        summary["task"] = prepared.info

    sft_ckpt = cfg.ppo.policy.name_or_path
    if "sft" in cfg.stages:
        out = timer.run("sft", sft_stage.run, cfg, run_dir / "sft", resume=resume)
        summary["stages"]["sft"] = out.metrics
        sft_ckpt = str(out.checkpoint)
        cfg = _with(cfg, "ppo.policy.name_or_path", cfg.ppo.policy.name_or_path or sft_ckpt)
        if not cfg.rm.model.name_or_path:
            cfg = _with(cfg, "rm.model.name_or_path", sft_ckpt)

    if task is not None and "rm" in cfg.stages:
        if resume and is_finished(run_dir / "rm"):  # labelled before the run stopped: not sampled again
            pref_path, annotation = task.dir / "preferences.jsonl", json.loads((task.dir / "annotation_report.json").read_text())
        else:
            pref_path, annotation = main_first(lambda: timer.run("preferences", task.collect_preferences, Path(sft_ckpt)))
        cfg = _with(cfg, "rm.data.path", str(pref_path))
        cfg = _with(cfg, "rm.data.eval_path", str(task.held_out_preferences))
        summary["task"]["annotation"] = annotation

    if "rm" in cfg.stages:
        rm_paths = []
        for member in range(cfg.rm.ensemble_size):  # member k > 0: seed + k, directory rm-k
            name = "rm" if member == 0 else f"rm-{member}"
            member_cfg = cfg if member == 0 else _with(cfg, "seed", cfg.seed + member)
            out = timer.run(name, rm_stage.run, member_cfg, run_dir / name, resume=resume)
            summary["stages"][name] = out.metrics
            rm_paths.append(str(out.checkpoint))
        if not (cfg.ppo.reward.model_paths or cfg.ppo.reward.callable):
            cfg = _with(cfg, "ppo.reward.model_paths", rm_paths)

    if "ppo" in cfg.stages:
        observer = task.ppo_observer() if task is not None else None
        labeler = task.label_preferences if task is not None else None
        if cfg.ppo.reward_refresh.every is not None and "rm" in cfg.stages:  # refresh replays the RM's own data
            refresh = cfg.ppo.reward_refresh
            cfg = _with(cfg, "ppo.reward_refresh.old_data", refresh.old_data or cfg.rm.data.path)
            cfg = _with(cfg, "ppo.reward_refresh.eval_data", refresh.eval_data or cfg.rm.data.eval_path)
        held_out = HeldOutPrompts(task.eval_prompts(), task.gold_judge) if task is not None else None  # for ppo.eval.every
        out = timer.run("ppo", ppo_stage.run, cfg, run_dir / "ppo", observer=observer, resume=resume, labeler=labeler,
                        held_out=held_out)
        summary["stages"]["ppo"] = out.metrics
        summary["evaluation"] = main_first(lambda: timer.run("eval", evaluate_run, cfg, run_dir, Path(sft_ckpt),
                                                              out.checkpoint, task))
    return main_first(lambda: _finish(cfg, run_dir, summary))


def _finish(cfg: RunConfig, run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The resolved config, summary.json and report.html."""
    from rlhfkit.report.html import write_report

    save_resolved(cfg, run_dir / "config.yaml")  # now with every resolved path
    _write_json(run_dir / "summary.json", summary)
    summary["report"] = str(write_report(run_dir))
    _write_json(run_dir / "summary.json", summary)
    return summary


def evaluate_run(cfg: RunConfig, run_dir: Path, sft_ckpt: Path, policy_ckpt: Path, task) -> dict[str, Any]:
    """Before (SFT) vs after (PPO) on held-out prompts: gold, proxy, exact KL, length, diversity."""
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device in ("auto", "cuda") else "cpu")
    tokenizer = load_tokenizer(ModelSection(name_or_path=str(sft_ckpt)), "eval")
    tokenizer.padding_side = "left"
    reference = freeze(disable_dropout(load_causal_lm(ModelSection(name_or_path=str(sft_ckpt)), tokenizer, "eval"))).to(device)
    policy = freeze(disable_dropout(load_causal_lm(ModelSection(name_or_path=str(policy_ckpt)), tokenizer, "eval"))).to(device)

    if task is not None:
        examples = task.eval_prompts()[: cfg.eval.num_prompts]
    else:
        examples = load_records(cfg.ppo.data.eval_path or cfg.ppo.data.path, "prompts", cfg.ppo.data.columns)[: cfg.eval.num_prompts]
    texts = [render_prompt(tokenizer, e) for e in examples]
    ids = tokenize_prompts(examples, tokenizer, cfg.ppo.generation.max_prompt_length)
    generation = evaluation_generation(cfg)
    judges = {}
    if cfg.ppo.reward.model_paths:
        proxy = RewardModelEnsemble(cfg.ppo.reward.model_paths, cfg.ppo.reward, device, prompt_records=dict(zip(texts, examples)))
        judges["proxy"] = lambda p, r: proxy.score(p, r).scores.tolist()
    if task is not None:
        judges["gold"] = task.gold_judge

    results: dict[str, Any] = {}
    for name, model in (("before", reference), ("after", policy)):
        records, aggregate = evaluate_policy(model, reference, tokenizer, texts, ids, generation, cfg.seed, judges)
        results[name] = aggregate
        with open(eval_dir / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        results[f"_{name}_records"] = records
    before, after = results.pop("_before_records"), results.pop("_after_records")
    judge = "gold" if "gold" in judges else "proxy" if "proxy" in judges else None
    if judge:
        results["win_rate"] = win_rate([r[judge] for r in after], [r[judge] for r in before])
        results["win_rate_judge"] = judge
    if task is not None and cfg.ppo.reward.model_paths:
        results["rm_gold_accuracy"] = task.rm_gold_accuracy(cfg.ppo.reward.model_paths, cfg.ppo.reward, device)
    _write_json(eval_dir / "metrics.json", results)
    return results


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
