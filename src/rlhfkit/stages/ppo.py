"""Stage 3 — PPO: the policy is optimised against the reward model, kept near a frozen reference.

Each iteration, read top to bottom in `run()`:
  1. rollout     sample one response per prompt from the policy (stop at EOS, temperature T)
  2. forward     logprobs (policy, reference) under T, entropy, values V(s_t) — dropout off
  3. score       the reward source scores prompt+response text at the EOS token
  4. rewards     r_t = −β·KL_t (+ score on the last token); GAE(γ, λ); whitened advantages
  5. update      `ppo_epochs` passes over shuffled mini-batches: clipped policy loss, clipped
                 value loss ×vf_coef, optional entropy bonus, gradient accumulation and clipping
  6. KL control  β stays fixed or follows the adaptive controller (Ziegler et al. 2019)
  7. log         TRL-named metrics, timing split, a sample table every `sample_every` iterations
  8. diagnose    health checks, early stopping, best policy; every `reward_refresh.every`
                 iterations the reward model is re-fit on labelled pairs from the current
                 policy (rewards/refresh.py)
  9. checkpoint  every `checkpoint.save_every` iterations, at the end and on SIGINT/SIGTERM
                 (training/checkpoint.py); a NaN/Inf logprob, value, reward or loss skips the
                 update (training/faults.py); `resume=True` continues from the newest checkpoint

Implementation choices (docs/ppo.md lists each with its source): old logprobs are recomputed by
a forward pass rather than taken from the sampler; the score is added to the last response token
(not TRL's first pad slot); policy and critic are separate models, clipped separately.

Options: `value_head: shared` replaces the critic model by a scalar head on the policy's last
hidden state (same forward pass; the value loss then also trains the policy's trunk);
`lora` trains LoRA adapters only, and the reference is the policy with its adapters disabled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.markup import escape
from transformers import get_scheduler

from rlhfkit.algos.kl import AdaptiveKLController, FixedKLController
from rlhfkit.algos.losses import ppo_policy_loss, value_loss
from rlhfkit.algos.masked import masked_mean
from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import PPOConfig, RunConfig
from rlhfkit.data.records import load_records
from rlhfkit.diagnostics import EarlyStopper, TrainingMonitor, plan_actions
from rlhfkit.data.templates import render_prompt
from rlhfkit.data.tokenize import PromptCollator, TruncationStats, tokenize_prompts
from rlhfkit.models.lora import AdapterFreeReference, add_lora, merged, require_peft
from rlhfkit.models.load import (
    check_model_source,
    context_length,
    disable_dropout,
    freeze,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    save_pretrained_atomic,
)
from rlhfkit.rewards.refresh import Labeler, LabelsNeeded, RewardRefresher, import_labeler
from rlhfkit.rewards.sources import CallableReward, RewardModelEnsemble, finalize_scores, import_reward_callable
from rlhfkit.models.value_head import VALUE_HEAD_FILE, SharedValueHead
from rlhfkit.rollout.experience import (
    compute_rewards_and_advantages,
    forward_rollout,
    policy_logprobs,
    policy_logprobs_and_values,
    rollout_stats,
    token_values,
)
from rlhfkit.rollout.generation import HFGenerationBackend, sample_rollout
from rlhfkit.rollout.types import Rollout
from rlhfkit.stages.common import StageOutput
from rlhfkit.training.checkpoint import Checkpointer
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import make_accelerator, seed_everything
from rlhfkit.training.metrics import MetricsWriter
from rlhfkit.training.progress import StageProgress, console
from rlhfkit.training.resume import finished_stage, fingerprint, mark_finished
from rlhfkit.training.signals import stop_at_safe_points


Observer = Callable[[Rollout], dict[str, float]]


def _reference_section(ppo: PPOConfig) -> ModelSection:
    return ppo.reference if ppo.reference.name_or_path else ppo.policy


def _value_section(ppo: PPOConfig, tokenizer) -> ModelSection:
    """Critic initialisation: explicit path, else the first reward model (N+ detail 18), else the policy.

    The critic reads the *policy's* token ids, so a reward model with another vocabulary cannot
    be its starting point (its embeddings would be indexed by the wrong ids): then the policy is.
    """
    if ppo.value_model.name_or_path:
        return ppo.value_model
    source = ppo.policy.name_or_path
    if ppo.reward.model_paths:
        rm_tokenizer = load_tokenizer(ModelSection(name_or_path=ppo.reward.model_paths[0]), "ppo.reward.model_paths[0]")
        if rm_tokenizer.get_vocab() == tokenizer.get_vocab():
            source = ppo.reward.model_paths[0]
        else:
            console.print("\\[ppo] the reward model's vocabulary differs from the policy's: the critic starts from the policy")
    return ppo.value_model.model_copy(update={"name_or_path": source})


def validate(cfg: RunConfig) -> None:
    """Everything that can be checked before any model is loaded."""
    ppo = cfg.ppo
    check_model_source(ppo.policy, "ppo.policy")
    if ppo.lora is not None:
        require_peft()
    if not ppo.data.path:
        raise ConfigError("ppo.data.path is empty: give a JSONL file of {prompt} records")
    load_records(ppo.data.path, "prompts")
    if ppo.reward.callable:
        import_reward_callable(ppo.reward.callable)
    elif not ppo.reward.model_paths:
        raise ConfigError("ppo.reward: give model_paths (reward-model checkpoints) or callable")
    for i, path in enumerate(ppo.reward.model_paths):
        check_model_source(ModelSection(name_or_path=path), f"ppo.reward.model_paths[{i}]")
    validate_refresh(ppo, labeler_given=False)


def validate_refresh(ppo: PPOConfig, labeler_given: bool) -> None:
    refresh = ppo.reward_refresh
    if refresh.every is None:
        return
    if ppo.reward.callable:
        raise ConfigError("ppo.reward_refresh needs reward models to fine-tune; ppo.reward.callable is not trained")
    if refresh.labeler == "task" and not labeler_given:
        raise ConfigError("ppo.reward_refresh.labeler 'task' needs the bundled task (rlhfkit run with task:); "
                          "give 'module:function' or 'file' instead")
    if ":" in refresh.labeler:
        import_labeler(refresh.labeler)
    for name in ("old_data", "eval_data"):
        if (path := getattr(refresh, name)) is not None:
            load_records(path, "preferences")


def load_prompts(ppo: PPOConfig, tokenizer) -> tuple[list[str], list[list[int]], TruncationStats]:
    """Prompt texts as the policy sees them (chat template applied to chat records) and their ids."""
    records = load_records(ppo.data.path, "prompts")
    if ppo.data.max_examples:
        records = records[: ppo.data.max_examples]
    stats = TruncationStats()
    ids = tokenize_prompts(records, tokenizer, ppo.generation.max_prompt_length, stats)
    if stats.dropped:
        raise ConfigError(f"{ppo.data.path}: {stats.dropped} prompt(s) tokenize to nothing")
    return [render_prompt(tokenizer, r) for r in records], ids, stats


def check_fits_context(ppo: PPOConfig, prompt_ids: list[list[int]], limit: int | None) -> None:
    """The longest prompt plus the response budget must fit the policy's positions: otherwise
    generation fails with an index error in the middle of a rollout."""
    longest = max((len(ids) for ids in prompt_ids), default=0)
    if limit is not None and longest + ppo.generation.max_new_tokens > limit:
        raise ConfigError(
            f"{ppo.data.path}: the longest prompt ({longest} tokens) + ppo.generation.max_new_tokens "
            f"({ppo.generation.max_new_tokens}) = {longest + ppo.generation.max_new_tokens} is more than the policy's "
            f"{limit} positions: lower ppo.generation.max_prompt_length (prompts are cut from the left) or max_new_tokens")


class PromptSampler:
    """Cycles through the prompts in a freshly shuffled order each pass (seeded)."""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self, k: int) -> list[int]:
        picked = []
        while len(picked) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            picked.append(self.order.pop())
        return picked

    def state_dict(self) -> dict[str, list[int]]:
        """The rest of the current pass (the generator's state is checkpointed with the other RNGs)."""
        return {"order": list(self.order)}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        self.order = [int(i) for i in state["order"]]


def ppo_update(rollout: Rollout, policy, value_model, optimizer, scheduler, ppo: PPOConfig, generator: torch.Generator,
               guard: FaultGuard | None = None, iteration: int = 0) -> tuple[dict[str, float], str | None]:
    """`ppo_epochs` passes over shuffled mini-batches; returns (mean losses and diagnostics, fault).

    `fault` names the first NaN/Inf loss or gradient norm (None if there was none): its optimiser
    step is void (gradients zeroed, no step) and the update ends there.
    """
    temperature = ppo.generation.temperature
    fault: str | None = None
    step_size = ppo.mini_batch_size * ppo.gradient_accumulation_steps
    log: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "clipfrac", "approx_kl", "ratio", "ratio_max", "vf_clipfrac", "entropy", "first_ratio_max_dev")}
    policy.train()
    value_model.train()
    for epoch in range(ppo.ppo_epochs):
        perm = torch.randperm(rollout.batch_size, generator=generator)
        epoch_kl: list[float] = []
        for step_start in range(0, rollout.batch_size, step_size):
            for mb_start in range(step_start, step_start + step_size, ppo.mini_batch_size):
                mb = rollout.select(perm[mb_start : mb_start + ppo.mini_batch_size])
                mask = mb.response_mask.float()
                if isinstance(value_model, SharedValueHead):  # one forward pass; the value loss reaches the trunk
                    logprobs, entropy, values = policy_logprobs_and_values(policy, value_model, mb, temperature)
                else:
                    logprobs, entropy = policy_logprobs(policy, mb, temperature, with_entropy=True)
                    values = token_values(value_model, mb)
                pg_loss, pg = ppo_policy_loss(logprobs, mb.logprobs, mb.advantages, mask, ppo.clip_range)
                vf_loss, vf = value_loss(values, mb.values, mb.returns, mask, ppo.clip_range_value)
                mean_entropy = masked_mean(entropy, mask)
                loss = pg_loss + ppo.vf_coef * vf_loss - ppo.entropy_coef * mean_entropy
                if guard is not None and (fault := guard.non_finite(iteration, loss=loss)) is not None:
                    break
                (loss / ppo.gradient_accumulation_steps).backward()
                if epoch == 0 and mb_start == 0:  # the on-policy check: must be 0 with dropout off
                    log["first_ratio_max_dev"].append(float(((torch.exp(logprobs.detach() - mb.logprobs) - 1).abs() * mask).max()))
                for key, value in (("pg_loss", pg_loss.item()), ("vf_loss", vf_loss.item()), ("clipfrac", pg["clipfrac"]),
                                   ("approx_kl", pg["approx_kl"]), ("ratio", pg["ratio_mean"]), ("ratio_max", pg["ratio_max"]),
                                   ("vf_clipfrac", vf["clipfrac"]), ("entropy", mean_entropy.item())):
                    log[key].append(value)
                epoch_kl.append(pg["approx_kl"])
            if fault is None:  # policy and critic clipped separately; without max_grad_norm the norms are only checked
                norms = torch.stack([torch.nn.utils.clip_grad_norm_(model.parameters(), ppo.max_grad_norm or math.inf)
                                     for model in (policy, value_model)])
                fault = guard.non_finite(iteration, grad_norm=norms) if guard is not None else None
            if fault is not None:  # this optimiser step is void and the update ends
                optimizer.zero_grad(set_to_none=True)
                break
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if fault is not None:
            break
        if ppo.target_kl is not None and sum(epoch_kl) / len(epoch_kl) > ppo.target_kl:
            log.setdefault("early_stop_epoch", []).append(float(epoch + 1))
            break
    policy.eval()
    value_model.eval()
    ratios = torch.tensor(log["ratio"])
    return {
        "loss/policy_avg": _avg(log["pg_loss"]),
        "loss/value_avg": _avg(log["vf_loss"]),
        "policy/clipfrac_avg": _avg(log["clipfrac"]),
        "policy/approxkl_avg": _avg(log["approx_kl"]),
        "policy/first_minibatch_ratio_dev": _avg(log["first_ratio_max_dev"]),
        "policy/entropy_train_avg": _avg(log["entropy"]),
        "val/clipfrac_avg": _avg(log["vf_clipfrac"]),
        "val/ratio": _avg(log["ratio"]),
        "val/ratio_var": float(ratios.var()) if len(ratios) > 1 else 0.0,
        "val/ratio_max": max(log["ratio_max"]) if log["ratio_max"] else 0.0,
        "policy/epochs_run": log.get("early_stop_epoch", [float(ppo.ppo_epochs)])[0],
    }, fault


def _avg(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(cfg: RunConfig, stage_dir: Path, observer: Observer | None = None, *, resume: bool = False,
        labeler: Labeler | None = None) -> StageOutput:
    """Train the policy; `observer(rollout)` may add metrics per iteration (e.g. a gold judge's score);
    `labeler` labels fresh pairs for `reward_refresh.labeler: task`. With `resume`, continue from
    STAGE/checkpoints (or return the output of a stage that already finished)."""
    ppo = cfg.ppo
    if (done := finished_stage(stage_dir, resume)) is not None:
        return done
    validate_refresh(ppo, labeler_given=labeler is not None)
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision)
    device = accelerator.device
    stage_dir.mkdir(parents=True, exist_ok=True)

    # Models: policy (trained), reference (frozen), critic (trained), reward source (frozen).
    tokenizer = load_tokenizer(ppo.policy, "ppo.policy")
    tokenizer.padding_side = "left"
    policy = disable_dropout(load_causal_lm(ppo.policy, tokenizer, "ppo.policy")).to(device)
    if ppo.lora is not None:  # adapters train; the reference is the same weights with adapters off
        policy = disable_dropout(add_lora(policy, ppo.lora))
        reference = AdapterFreeReference(policy).eval()
    else:
        reference = freeze(disable_dropout(load_causal_lm(_reference_section(ppo), tokenizer, "ppo.reference"))).to(device)
    if ppo.value_head == "shared":  # a scalar head on the policy's last hidden state, no critic model
        value_model = SharedValueHead.for_policy(policy)
    else:
        value_model = disable_dropout(load_reward_model(_value_section(ppo, tokenizer), tokenizer, "ppo.value_model")).to(device)
    if ppo.reward.callable:
        reward_source = CallableReward(ppo.reward.callable)
    else:
        reward_source = RewardModelEnsemble(ppo.reward.model_paths, ppo.reward, device, ppo.policy.dtype, ppo.mini_batch_size * 4)

    prompt_texts, prompt_ids, prompt_stats = load_prompts(ppo, tokenizer)
    check_fits_context(ppo, prompt_ids, context_length(policy))
    collate = PromptCollator(tokenizer.pad_token_id)
    sampler = PromptSampler(len(prompt_texts), cfg.seed)
    backend = HFGenerationBackend(policy, tokenizer, ppo.generation)

    steps_per_iteration = ppo.ppo_epochs * ppo.batch_size // (ppo.mini_batch_size * ppo.gradient_accumulation_steps)
    total_steps = ppo.num_iterations * steps_per_iteration
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": ppo.learning_rate},
         {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": ppo.value_learning_rate or ppo.learning_rate}],
        eps=ppo.adam_eps,
    )
    scheduler = get_scheduler(ppo.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=total_steps)
    kl_ctl = (AdaptiveKLController(ppo.kl.kl_coef, ppo.kl.target, ppo.kl.horizon) if ppo.kl.adaptive
              else FixedKLController(ppo.kl.kl_coef))
    generator = torch.Generator().manual_seed(cfg.seed)
    monitor = TrainingMonitor(ppo.diagnostics) if ppo.diagnostics.enabled else None
    stopper = EarlyStopper(ppo.early_stopping)
    guard = FaultGuard("ppo", ppo.checkpoint.max_consecutive_faults, unit="iteration")
    refresher = RewardRefresher(cfg, stage_dir, labeler) if ppo.reward_refresh.every is not None else None

    # Everything above that changes while training is checkpointed; resuming loads the newest checkpoint.
    checkpointer = Checkpointer(
        stage_dir, ppo.checkpoint, stage="ppo", unit="iteration", fingerprint=fingerprint(cfg, ppo, stage_dir),
        models={"policy": policy, "value_head" if ppo.value_head == "shared" else "value_model": value_model}, optimizer=optimizer, scheduler=scheduler,
        generators={"update": generator, "prompts": sampler.generator},
        stateful={"prompts": sampler, "kl_controller": kl_ctl, "monitor": monitor, "early_stopping": stopper, "faults": guard,
                  "reward_refresh": refresher},
        logs=("metrics.jsonl", "samples.jsonl"),
    )
    resumed = (checkpointer.restore() if resume else None) or {"step": 0, "stats": {}, "stopped": False}
    iteration, logged = resumed["step"], resumed["stats"]  # logged: the last metrics line written
    first = ppo.num_iterations + 1 if resumed["stopped"] else iteration + 1
    if refresher is not None and refresher.round > 0:  # resumed after a refresh: score with the refreshed members
        reward_source = RewardModelEnsemble(refresher.model_paths, ppo.reward, device, ppo.policy.dtype, ppo.mini_batch_size * 4)

    def sample_pairs(picked: list[int]) -> tuple[list[str], list[str], list[str]]:
        """Two responses per picked prompt from the current policy (PPO's sampling settings)."""
        prompts, first_responses, second_responses = [], [], []
        for start in range(0, len(picked), ppo.batch_size):
            chunk = picked[start : start + ppo.batch_size]
            twice = chunk + chunk
            batch = collate([prompt_ids[i] for i in twice])
            pair = sample_rollout(backend, tokenizer, [prompt_texts[i] for i in twice],
                                  batch["input_ids"].to(device), batch["attention_mask"].to(device))
            prompts += pair.prompts[: len(chunk)]
            first_responses += pair.responses[: len(chunk)]
            second_responses += pair.responses[len(chunk) :]
        return prompts, first_responses, second_responses

    def refresh_reward_model(labelled, at_iteration: int) -> None:
        """Fine-tune the RM members on the labelled pairs (+ replay) and score with them from now on."""
        nonlocal reward_source
        metrics = refresher.finish(*labelled, score=lambda p, r: reward_source.score(p, r).scores)
        del reward_source
        reward_source = RewardModelEnsemble(refresher.model_paths, ppo.reward, device, ppo.policy.dtype, ppo.mini_batch_size * 4)
        writer.log(at_iteration, metrics)
        console.print(f"\\[ppo] {escape(metrics['event'])}", highlight=False)
    console.print(f"\\[ppo] {len(prompt_texts)} prompts ({prompt_stats.truncated} truncated), {ppo.num_iterations} iterations × "
                  f"{ppo.batch_size} episodes, {steps_per_iteration} optimiser steps/iteration, {total_steps} total")

    samples_path = stage_dir / "samples.jsonl"
    with MetricsWriter(stage_dir / "metrics.jsonl", "ppo", ppo.logging.tensorboard) as writer, \
            StageProgress("PPO", ppo.num_iterations, enabled=ppo.logging.progress) as progress, \
            open(samples_path, "a", encoding="utf-8") as samples_file, stop_at_safe_points():
        progress.advance(iteration)
        if refresher is not None and refresher.pending_iteration is not None and first <= ppo.num_iterations:
            refresh_reward_model(refresher.labelled_by_person(), refresher.pending_iteration)  # labelled while stopped
        for iteration in range(first, ppo.num_iterations + 1):
            # 1. rollout
            t0 = time.perf_counter()
            picked = sampler.next(ppo.batch_size)
            batch = collate([prompt_ids[i] for i in picked])
            rollout = sample_rollout(backend, tokenizer, [prompt_texts[i] for i in picked],
                                     batch["input_ids"].to(device), batch["attention_mask"].to(device))
            t1 = time.perf_counter()
            # 2. forward passes; 3. score
            forward_rollout(rollout, policy, reference, value_model, ppo.generation.temperature, ppo.mini_batch_size)
            scored = reward_source.score(rollout.prompts, rollout.responses)
            rollout.scores = finalize_scores(scored, rollout.ended_with_eos, ppo.reward).to(device)
            # 4. rewards and advantages under the current β
            beta = kl_ctl.value
            compute_rewards_and_advantages(rollout, kl_coef=beta, kl_estimator=ppo.kl.estimator, gamma=ppo.gamma,
                                           lam=ppo.lam, whiten_rewards=ppo.whiten_rewards, whiten_advantages=ppo.whiten_advantages)
            stats = rollout_stats(rollout, beta)
            t2 = time.perf_counter()
            # 5. update; skipped when a logprob, value or reward is NaN/Inf, cut short by a NaN/Inf loss
            fault = guard.non_finite(iteration, logprobs=rollout.logprobs, ref_logprobs=rollout.ref_logprobs,
                                     values=rollout.values, scores=rollout.scores, rewards=rollout.rewards)
            if fault is None:
                update, fault = ppo_update(rollout, policy, value_model, optimizer, scheduler, ppo, generator, guard, iteration)
                stats.update(update)
            guard.record(iteration, fault, writer)  # a fault line + warning; stops after too many in a row
            t3 = time.perf_counter()
            if fault is not None:  # no KL step, no metrics line for a skipped update
                progress.advance()
                checkpointer.safe_point(iteration, {"stats": logged, "stopped": False}, final=iteration == ppo.num_iterations,
                                        healthy=False)
                continue
            # 6. KL control, on the batch mean of the summed per-token KL
            kl_ctl.update(stats["objective/kl"], ppo.batch_size)
            # 7. log
            stats.update({
                "kl_coef": beta, "lr": scheduler.get_last_lr()[0], "episode": iteration * ppo.batch_size,
                "reward/ensemble_disagreement": scored.disagreement,
                "timing/generation": t1 - t0, "timing/scoring": t2 - t1, "timing/training": t3 - t2,
            })
            if observer is not None:
                stats.update(observer(rollout))
            writer.log(iteration, stats)
            logged = stats
            progress.advance(score=stats["objective/scores"], kl=stats["objective/kl"], beta=beta)
            # 8. diagnostics and early stopping
            stop = _diagnose(monitor, ppo, iteration, stats, writer, kl_ctl, scheduler)
            improved, plateau = stopper.update(iteration, stats)
            if improved:
                save_pretrained_atomic(merged(policy), tokenizer, stage_dir / "best_policy")
                writer.log(iteration, {"event": f"best {ppo.early_stopping.metric} = {stopper.best_value:.4g}"})
            if iteration % ppo.sample_every == 0 or iteration == 1 or iteration == ppo.num_iterations:
                for i in range(min(4, rollout.batch_size)):
                    samples_file.write(json.dumps({"iteration": iteration, "prompt": rollout.prompts[i],
                                                   "response": rollout.responses[i], "score": float(rollout.scores[i])}) + "\n")
                samples_file.flush()
            if stop or plateau:
                reason = "a diagnostic asked to stop" if stop else f"{ppo.early_stopping.metric} stopped improving"
                writer.log(iteration, {"event": f"early stop: {reason}"})
                console.print(f"\\[ppo] stopping at iteration {iteration}: {reason}")
            elif refresher is not None and refresher.due(iteration):  # 8b. reward-model refresh (iterated RLHF)
                labelled = refresher.start(iteration, len(prompt_texts), sample_pairs)
                if labelled is None:  # a person labels the pairs: checkpoint here, stop, go on with --resume
                    checkpointer.save(iteration, {"stats": logged, "stopped": False})
                    raise LabelsNeeded(refresher.dir / f"round-{refresher.round + 1}" / "to_label.jsonl", ppo.reward_refresh.num_pairs)
                refresh_reward_model(labelled, iteration)
            # 9. checkpoint every checkpoint.save_every iterations and at the end; stop here on SIGINT/SIGTERM
            checkpointer.safe_point(iteration, {"stats": logged, "stopped": stop or plateau},
                                    final=iteration == ppo.num_iterations or stop or plateau)
            if stop or plateau:
                break

    _save(stage_dir, policy, value_model, tokenizer, kl_ctl, iteration)
    final = {k: v for k, v in logged.items() if k.startswith(("objective/", "policy/", "rollout/", "kl_coef"))}
    output = StageOutput(checkpoint=stage_dir / "policy", metrics=final)
    mark_finished(stage_dir, output)
    return output


def _diagnose(monitor, ppo: PPOConfig, iteration: int, stats: dict, writer: MetricsWriter, kl_ctl, scheduler) -> bool:
    """Warn once per episode of trouble; with auto_actions, raise β / lower the LR. True = stop."""
    if monitor is None:
        return False
    diagnostics = monitor.observe(iteration, stats)
    for diagnostic in diagnostics:
        writer.log(iteration, diagnostic.as_metrics())
        console.print(f"[yellow]warning[/] {escape(str(diagnostic))}", highlight=False)
    if not (diagnostics and ppo.diagnostics.auto_actions):
        return False
    adjustment = plan_actions(diagnostics, ppo.diagnostics)
    if adjustment.kl_coef_factor != 1.0:
        kl_ctl.value *= adjustment.kl_coef_factor
    if adjustment.lr_factor != 1.0:  # the scheduler multiplies base_lrs: scale those
        scheduler.base_lrs = [lr * adjustment.lr_factor for lr in scheduler.base_lrs]
    return adjustment.stop


def _save(stage_dir: Path, policy, value_model, tokenizer, kl_ctl, iteration: int) -> None:
    """Policy (causal LM, LoRA adapters merged in) and critic as HF checkpoints — or, with a shared
    head, `value_head.safetensors` — plus the KL controller state."""
    tokenizer.padding_side = "right"
    save_pretrained_atomic(merged(policy, in_place=True), tokenizer, stage_dir / "policy")
    if isinstance(value_model, SharedValueHead):
        value_model.save(stage_dir / VALUE_HEAD_FILE)
    else:
        save_pretrained_atomic(value_model, tokenizer, stage_dir / "value_model")
    tokenizer.padding_side = "left"
    state = {"iteration": iteration, "kl_controller": kl_ctl.state_dict()}
    tmp = stage_dir / "trainer_state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(stage_dir / "trainer_state.json")
