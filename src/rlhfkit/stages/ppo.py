"""Stage 3 — PPO: the policy is optimised against the reward model, kept near a frozen reference.

`run()` is the algorithm; each numbered step is one call:
  1. rollout     each process samples responses for its share of the batch's prompts (stop at EOS,
                 temperature T, its own RNG stream) with HF generate, or vLLM given the policy's
                 current weights (ppo.generation.backend)
  2. score       the reward source scores the sampled ids at the EOS token (rewards/sources.py)
  3. experience  old logprobs, reference logprobs, values under T (dropout off); r_t = −β·KL_t
                 (+ score on the last token); GAE(γ, λ); advantages whitened over the global batch
                 — one immutable Experience (rollout/experience.py)
  4. update      `ppo_epochs` passes over shuffled mini-batches: clipped policy loss, clipped value
                 loss ×vf_coef, optional entropy bonus; accelerate's accumulate / backward / clip
                 (training/ppo_update.py)
  5. KL control  β stays fixed or follows the adaptive controller (Ziegler et al. 2019)
  6. bookkeeping held-out evaluation every `eval.every` iterations (evaluation/during_ppo.py), metrics
                 (main process), samples, health checks, early stopping, the RM refresh (iterated RLHF),
                 a checkpoint every `checkpoint.save_every` iterations

Before it (stages/ppo_inputs.py): `validate`, run by the CLI before any model loads, the prompts,
the context-length check, the reference's and critic's starting checkpoints, the prompt order.
Around the loop: `_setup` loads the four models (policy and critic as one `ActorCritic`, prepared
by accelerate — DDP or FSDP2, mixed precision, gradient checkpointing — a frozen
reference, a frozen reward source) and everything that is checkpointed.

Data parallel: `ppo.batch_size` is the global number of episodes; with W processes each samples
batch_size / W. Every statistic that must be global is (whitening, logged means, the KL fed to the
controller, the monitor's and early stopper's inputs, the NaN/Inf verdict, a stop signal), so the
result does not depend on W beyond sampling noise. Only the main process writes files.

Implementation choices (docs/ppo.md lists each with its source): old logprobs are recomputed by a
forward pass rather than taken from the sampler; the score is added to the last response token
(not TRL's first pad slot); policy and critic are separate networks, clipped separately.
Options: `value_head: shared` (a scalar head on the policy's last hidden state instead of a critic
model), `lora` (adapters train; the reference is the policy with its adapters disabled), `value_lora`
(the critic's adapters and scalar head train, its backbone frozen).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from rich.markup import escape
from transformers import get_scheduler

from rlhfkit.algos.kl import AdaptiveKLController, FixedKLController
from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import PPOConfig, RunConfig
from rlhfkit.data.tokenize import PromptCollator
from rlhfkit.diagnostics import EarlyStopper, TrainingMonitor, plan_actions
from rlhfkit.evaluation.during_ppo import HeldOutEvaluator, HeldOutPrompts, eval_due, held_out_from_config
from rlhfkit.metric_names import M
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.gguf import resolve_model_path
from rlhfkit.models.load import (
    context_length,
    disable_dropout,
    enable_gradient_checkpointing,
    freeze,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    save_pretrained_atomic,
    score_head_name,
)
from rlhfkit.models.lora import AdapterFreeReference, add_lora, merged
from rlhfkit.models.packed_attention import use_packed_attention
from rlhfkit.models.value_head import VALUE_HEAD_FILE, SharedValueHead
from rlhfkit.rewards.refresh import Labeler, LabelsNeeded, RewardRefresher
from rlhfkit.rewards.sources import CallableReward, RewardModelEnsemble, finalize_scores
from rlhfkit.rollout.experience import AdvantageSettings, contiguous_chunks, experience_stats, make_experience
from rlhfkit.rollout.generation import HFGenerationBackend, sample_rollout
from rlhfkit.rollout.types import Rollout
from rlhfkit.rollout.vllm_backend import VLLMGenerationBackend
from rlhfkit.stages.common import StageOutput
from rlhfkit.stages.ppo_inputs import (  # noqa: F401 - validate and validate_refresh are this stage's API too
    PromptSampler,
    check_fits_context,
    load_prompts,
    reference_section,
    validate,
    validate_refresh,
    value_section,
)
from rlhfkit.training.checkpoint import Checkpointer
from rlhfkit.training.distributed import Collectives, configure_deepspeed, policy_for_generation
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import make_accelerator, make_adamw, seed_everything
from rlhfkit.training.metrics import MetricsWriter
from rlhfkit.training.micro_batches import step_micro_batches
from rlhfkit.training.ppo_update import ppo_update
from rlhfkit.training.progress import StageProgress, console
from rlhfkit.training.resume import finished_stage, fingerprint, mark_finished
from rlhfkit.training.sharded import is_fsdp, whole_weights
from rlhfkit.training.signals import stop_at_safe_points
from rlhfkit.training.throughput import iteration_figures, peak_flops, ppo_shapes

Observer = Callable[[Rollout], dict[str, float]]


def run(cfg: RunConfig, stage_dir: Path, observer: Observer | None = None, *, resume: bool = False,
        labeler: Labeler | None = None, held_out: HeldOutPrompts | None = None) -> StageOutput:
    """Train the policy; `observer(rollout)` may add metrics per iteration (e.g. a gold judge's score);
    `labeler` labels fresh pairs for `reward_refresh.labeler: task`; `held_out`: a task's evaluation
    prompts and gold judge for `eval.every` (else ppo.data.eval_path). With `resume`, continue from
    STAGE/checkpoints (or return the output of a stage that already finished)."""
    ppo = cfg.ppo
    if (done := finished_stage(stage_dir, resume)) is not None:
        return done
    validate_refresh(ppo, labeler_given=labeler is not None)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, ppo.gradient_accumulation_steps,
                                   lora=ppo.lora is not None or ppo.value_lora is not None)
    check_data_parallel(ppo, accelerator.num_processes, accelerator.distributed_type)
    seed_everything(cfg.seed, accelerator.process_index)  # each process its own sampling stream
    s = _setup(cfg, stage_dir, accelerator, labeler, held_out)
    resumed = (s.checkpointer.restore() if resume else None) or {"step": 0, "stats": {}, "stopped": False}
    iteration, s.logged = resumed["step"], resumed["stats"]  # logged: the last metrics line written
    first = ppo.num_iterations + 1 if resumed["stopped"] else iteration + 1
    if s.refresher is not None and s.refresher.round > 0:  # resumed after a refresh: score with the refreshed members
        s.reward_source = _reward_models(s.refresher.model_paths, ppo, s)
    settings = dict(kl_estimator=ppo.kl.estimator, gamma=ppo.gamma, lam=ppo.lam,
                    whiten_rewards=ppo.whiten_rewards, whiten_advantages=ppo.whiten_advantages)
    share = ppo.batch_size // accelerator.num_processes
    micro_batches = ppo.ppo_epochs * share // ppo.mini_batch_size  # per update, on this process (its progress bar)
    rank = accelerator.process_index

    with MetricsWriter(stage_dir / "metrics.jsonl", "ppo", ppo.logging.report_to, enabled=s.main) as s.writer, \
            StageProgress("PPO", ppo.num_iterations, enabled=ppo.logging.progress and s.main) as progress, \
            stop_at_safe_points():
        progress.advance(iteration)
        if s.refresher is not None and s.refresher.pending_iteration is not None and first <= ppo.num_iterations:
            _refresh_reward_model(s, s.refresher.labelled_by_person(), s.refresher.pending_iteration)  # labelled while stopped
        for iteration in range(first, ppo.num_iterations + 1):
            t0 = time.perf_counter()
            # 1. rollout: this process's share of the iteration's prompts
            prompts = s.sampler.next(ppo.batch_size // ppo.samples_per_prompt)  # each repeated samples_per_prompt times
            picked = [i for i in prompts for _ in range(ppo.samples_per_prompt)][rank * share : (rank + 1) * share]
            with progress.phase("rollout"):
                rollout = _sample(s, picked)
            t1 = time.perf_counter()
            # 2. score, at the EOS token of the sampled ids
            scored = s.reward_source.score_rollout(rollout)
            scores = finalize_scores(scored, rollout.ended_with_eos, ppo.reward).to(s.device)
            # 3. experience under the current β: logprobs, reference logprobs, values, rewards, GAE
            beta = s.kl_ctl.value
            first_order, forwards = _experience_micro_batches(ppo, rollout, s.generator, s.device)
            with accelerator.autocast(), progress.phase("scoring"):
                exp = make_experience(rollout, scores, s.actor_critic, s.reference, AdvantageSettings(beta, **settings),
                                      ppo.generation.temperature, forwards, packed=ppo.micro_batch_tokens is not None,
                                      all_sum=s.collectives.sum)
            stats = experience_stats(exp, beta, s.collectives.sum)
            t2 = time.perf_counter()
            # 4. update; skipped everywhere when a logprob, value or reward is NaN/Inf on any process
            fault = s.guard.non_finite(iteration, logprobs=exp.logprobs, ref_logprobs=exp.ref_logprobs,
                                       values=exp.values, scores=exp.scores, rewards=exp.rewards)
            if s.collectives.any(fault is not None) and fault is None:
                fault = s.guard.flag("a tensor on another process")
            if fault is None:
                with progress.phase("update", micro_batches) as tick:
                    update = ppo_update(exp, s.actor_critic, s.optimizer, s.scheduler, accelerator, ppo, s.generator,
                                        s.collectives, s.guard, iteration, on_micro_batch=tick,
                                        train_policy=iteration > ppo.critic_warmup_iterations,  # critic warm-up first
                                        first_order=first_order)
                stats.update(update.stats)
                fault = update.fault
            s.guard.record(iteration, fault, s.writer)  # a fault line + warning; stops after too many in a row
            t3 = time.perf_counter()
            if fault is not None:  # no KL step, no metrics line for a skipped update
                progress.advance()
                s.checkpointer.safe_point(iteration, {"stats": s.logged, "stopped": False},
                                          final=iteration == ppo.num_iterations, healthy=False)
                continue
            # 5. KL control, on the batch mean of the summed per-token KL
            s.kl_ctl.update(stats[M.KL], ppo.batch_size)
            # 6. bookkeeping: held-out eval, metrics, samples, health checks, early stopping, RM refresh, checkpoint
            stats.update(_iteration_figures(s, iteration, beta, scored.disagreement, (t0, t1, t2, t3), stats, exp))
            if observer is not None:
                stats.update(s.global_means(observer(rollout)))
            stats.update(_held_out_eval(s, iteration, progress))
            stop = _bookkeeping(s, iteration, stats, exp, progress)
            if stop:
                break

    accelerator.wait_for_everyone()
    _save(stage_dir, s, iteration)
    output = StageOutput(checkpoint=stage_dir / "policy",
                         metrics={k: v for k, v in s.logged.items() if k.startswith(("objective/", "policy/", "rollout/", M.KL_COEF))})
    if s.main:  # the final models stay; the training checkpoints go unless checkpoint.keep_when_finished
        mark_finished(stage_dir, output, drop_checkpoints=not ppo.checkpoint.keep_when_finished)
    accelerator.wait_for_everyone()
    return output


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class _PPO:
    """What the loop holds: models, data, optimisation and the stateful helpers (all checkpointed)."""

    cfg: RunConfig
    stage_dir: Path
    accelerator: Any
    tokenizer: Any
    actor_critic: Any  # prepared ActorCritic
    reference: Any
    reward_source: Any
    prompt_texts: list[str]
    prompt_ids: list[list[int]]
    collate: PromptCollator
    sampler: "PromptSampler"
    optimizer: Any
    scheduler: Any
    kl_ctl: Any
    generator: torch.Generator
    monitor: TrainingMonitor | None
    stopper: EarlyStopper
    guard: FaultGuard
    refresher: RewardRefresher | None
    collectives: Collectives
    evaluator: HeldOutEvaluator | None = None
    vllm: VLLMGenerationBackend | None = None  # ppo.generation.backend vllm: the engine (hf: generate is per call)
    peak_flops: float | None = None  # per device, for the timing/*_mfu metrics
    checkpointer: Checkpointer | None = None
    prompt_records: dict | None = None  # policy-rendered prompt text -> its record (rewards/sources.py)
    writer: MetricsWriter | None = None
    logged: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def policy(self):
        """The policy module itself (unwrapped from DDP; under FSDP2 the module itself)."""
        return self.accelerator.unwrap_model(self.actor_critic).policy

    def global_means(self, local: dict[str, float]) -> dict[str, float]:
        """Per-process means of equal shares -> the batch mean (one all-reduce)."""
        if not local:
            return {}
        totals = self.collectives.sum(torch.tensor(list(local.values()), dtype=torch.float64, device=self.device))
        return dict(zip(local, (t / self.collectives.world_size for t in totals.tolist())))


def _setup(cfg: RunConfig, stage_dir: Path, accelerator, labeler: Labeler | None, held_out: HeldOutPrompts | None) -> _PPO:
    ppo, device = cfg.ppo, accelerator.device
    if accelerator.is_main_process:
        stage_dir.mkdir(parents=True, exist_ok=True)
    # Models: policy + critic (trained, one module), reference (frozen), reward source (frozen).
    tokenizer = load_tokenizer(ppo.policy, "ppo.policy")
    tokenizer.padding_side = "left"
    policy = disable_dropout(load_causal_lm(ppo.policy, tokenizer, "ppo.policy"))
    if ppo.lora is not None:  # adapters train; the reference is the same weights with adapters off
        policy = disable_dropout(add_lora(policy, ppo.lora))
        reference = AdapterFreeReference(policy).eval()
    else:
        reference = freeze(disable_dropout(load_causal_lm(reference_section(ppo), tokenizer, "ppo.reference"))).to(device)
    if ppo.value_head == "shared":  # a scalar head on the policy's last hidden state, no critic model
        critic = SharedValueHead.for_policy(policy)
    else:
        critic = disable_dropout(load_reward_model(value_section(ppo, tokenizer), tokenizer, "ppo.value_model",
                                                    fresh_init="zero"))
        if ppo.value_lora is not None:  # adapters and the scalar head train; the backbone is frozen
            critic = disable_dropout(add_lora(critic, ppo.value_lora, where="ppo.value_lora", head=score_head_name(critic)))
    if ppo.micro_batch_tokens is not None:  # packed micro-batches: attention row by row, not under a dense (N, N) mask
        for model in (policy, reference, critic):
            use_packed_attention(model)
    if ppo.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
        if not isinstance(critic, SharedValueHead):
            enable_gradient_checkpointing(critic)
    actor_critic = ActorCritic(policy, critic)

    prompt_texts, prompt_ids, prompt_stats, prompt_records = load_prompts(ppo, tokenizer)
    check_fits_context(ppo, prompt_ids, context_length(policy))
    steps_per_iteration = ppo.ppo_epochs * ppo.batch_size // (ppo.mini_batch_size * ppo.gradient_accumulation_steps
                                                              * accelerator.num_processes)
    total_steps = ppo.num_iterations * steps_per_iteration
    optimizer = make_adamw(
        [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": ppo.learning_rate},
         {"params": [p for p in critic.parameters() if p.requires_grad], "lr": ppo.value_learning_rate or ppo.learning_rate}],
        eps=ppo.adam_eps,
    )
    # The scheduler is stepped by hand once per optimiser step: accelerate's prepared scheduler would
    # step once per process and finish the schedule W times too early.
    scheduler = get_scheduler(ppo.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=total_steps)
    configure_deepspeed(accelerator, ppo.mini_batch_size, ppo.gradient_accumulation_steps, ppo.max_grad_norm)
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    if is_fsdp(accelerator):  # FSDP2 sets its shard units up from the root down, in a first forward through it
        with torch.no_grad():
            ids = torch.full((1, 2), tokenizer.eos_token_id, device=device)
            actor_critic(ids, torch.ones_like(ids), 1, 1.0)
    sampler = PromptSampler(len(prompt_texts), cfg.seed)  # the same order on every process; each takes its share
    records_by_text = dict(zip(prompt_texts, prompt_records))
    s = _PPO(
        cfg=cfg, stage_dir=stage_dir, accelerator=accelerator, tokenizer=tokenizer, actor_critic=actor_critic,
        reference=reference, reward_source=None, prompt_texts=prompt_texts, prompt_ids=prompt_ids,
        prompt_records=records_by_text,
        collate=PromptCollator(tokenizer.pad_token_id), sampler=sampler, optimizer=optimizer, scheduler=scheduler,
        kl_ctl=(AdaptiveKLController(ppo.kl.kl_coef, ppo.kl.target, ppo.kl.horizon) if ppo.kl.adaptive
                else FixedKLController(ppo.kl.kl_coef)),
        generator=torch.Generator().manual_seed(cfg.seed),
        monitor=TrainingMonitor(ppo.diagnostics, cfg) if ppo.diagnostics.enabled else None,
        stopper=EarlyStopper(ppo.early_stopping),
        guard=FaultGuard("ppo", ppo.checkpoint.max_consecutive_faults, unit="iteration"),
        refresher=RewardRefresher(cfg, stage_dir, labeler, records_by_text) if ppo.reward_refresh.every is not None else None,
        collectives=Collectives(device),
        peak_flops=peak_flops(ppo.logging.peak_flops, device, half_precision=cfg.mixed_precision != "no"),
    )
    if ppo.eval.every is not None:  # the proxy is whatever scores now (a refresh replaces s.reward_source)
        s.evaluator = HeldOutEvaluator(held_out or held_out_from_config(ppo), tokenizer, cfg,
                                       lambda p, r: s.reward_source.score(p, r).scores.tolist(), s.collectives,
                                       accelerator.process_index)
        s.prompt_records.update(s.evaluator.prompt_records)  # before any reward model is built from them
    s.reward_source = (CallableReward(ppo.reward.callable) if ppo.reward.callable
                       else _reward_models(ppo.reward.model_paths, ppo, s))
    if ppo.generation.backend == "vllm":
        # the architecture from the policy's directory (bundled:NAME resolved); weights come from the live policy
        s.vllm = VLLMGenerationBackend.start(resolve_model_path(ppo.policy.name_or_path), ppo.generation,
                                             tokenizer.eos_token_id, tokenizer.pad_token_id,
                                             str(policy.dtype).removeprefix("torch."), context_length(policy) or 2048,
                                             cfg.seed)
    # Everything above that changes while training is checkpointed; resuming loads the newest checkpoint.
    s.checkpointer = Checkpointer(
        stage_dir, ppo.checkpoint, stage="ppo", unit="iteration", fingerprint=fingerprint(cfg, ppo, stage_dir),
        models={"policy": policy, "value_head" if ppo.value_head == "shared" else "value_model": critic},
        optimizer=optimizer, scheduler=scheduler, generators={"update": s.generator, "prompts": sampler.generator},
        stateful={"prompts": sampler, "kl_controller": s.kl_ctl, "monitor": s.monitor, "early_stopping": s.stopper,
                  "faults": s.guard, "reward_refresh": s.refresher},
        logs=("metrics.jsonl", "samples.jsonl"), accelerator=accelerator, owner=actor_critic,
    )
    console.print(f"\\[ppo] {len(prompt_texts)} prompts ({prompt_stats.truncated} truncated), {ppo.num_iterations} "
                  f"iterations × {ppo.batch_size} episodes ({accelerator.num_processes} process(es) × "
                  f"{ppo.batch_size // accelerator.num_processes}), {steps_per_iteration} optimiser steps/iteration, "
                  f"{total_steps} total")
    return s


def _reward_models(paths: list[str], ppo: PPOConfig, s: _PPO) -> RewardModelEnsemble:
    return RewardModelEnsemble(paths, ppo.reward, s.device, ppo.policy.dtype, ppo.reward.batch_size, s.tokenizer,
                               prompt_records=s.prompt_records)


def check_data_parallel(ppo: PPOConfig, world_size: int, distributed_type: DistributedType = DistributedType.NO) -> None:
    """The global batch must split into whole optimiser steps on every process."""
    per_step = ppo.mini_batch_size * ppo.gradient_accumulation_steps * world_size
    if ppo.batch_size % per_step:
        raise ConfigError(
            f"ppo.batch_size ({ppo.batch_size}) must be a multiple of mini_batch_size × gradient_accumulation_steps × "
            f"processes ({ppo.mini_batch_size} × {ppo.gradient_accumulation_steps} × {world_size} = {per_step})")
    if world_size > 1 and ppo.generation.backend == "vllm":
        raise ConfigError("ppo.generation.backend vllm runs in one process only for now: launch without --num_processes, "
                          "or set ppo.generation.backend=hf")
    if distributed_type == DistributedType.DEEPSPEED and ppo.micro_batch_tokens is not None:
        raise ConfigError("ppo.micro_batch_tokens does not work with DeepSpeed (its engine expects the same number of "
                          "micro-batches in every optimiser step): leave it empty")
    if world_size > 1 and ppo.reward_refresh.every is not None:
        raise ConfigError("ppo.reward_refresh runs in one process only for now: launch without --num_processes, "
                          "or leave ppo.reward_refresh.every empty")


# ---------------------------------------------------------------------------------------------- the steps


def _experience_micro_batches(ppo: PPOConfig, rollout: Rollout, generator: torch.Generator,
                              device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The update's first-epoch shuffle (drawn here, before the experience, from the update's own
    generator) and the micro-batches of the experience forwards: consecutive chunks of
    mini_batch_size rows (the same padded shape as every update micro-batch), or with a token budget
    the update's first-epoch micro-batches themselves — either way the first update micro-batch
    recomputes its old logprobs bit for bit."""
    first_order = torch.randperm(rollout.batch_size, generator=generator)
    if ppo.micro_batch_tokens is None:
        return first_order, contiguous_chunks(rollout.batch_size, ppo.mini_batch_size, device)
    plan = step_micro_batches(first_order.to(device), rollout.query_mask.sum(1), rollout.response_mask.sum(1),
                              ppo.mini_batch_size, ppo.gradient_accumulation_steps, ppo.micro_batch_tokens)
    return first_order, [rows for step in plan for rows in step]


def _sample(s: _PPO, picked: list[int]) -> Rollout:
    """Responses from the current policy (full weights gathered under FSDP / ZeRO-3) for `picked` prompts."""
    batch = s.collate([s.prompt_ids[i] for i in picked])
    texts, ids, mask = [s.prompt_texts[i] for i in picked], batch["input_ids"].to(s.device), batch["attention_mask"].to(s.device)
    if s.vllm is not None:  # the engine samples from the policy's weights as they are now (LoRA merged in)
        s.vllm.sync_weights(merged(s.policy))
        return sample_rollout(s.vllm, s.tokenizer, texts, ids, mask)
    with policy_for_generation(s.accelerator, s.actor_critic) as policy:
        backend = HFGenerationBackend(policy, s.tokenizer, s.cfg.ppo.generation)
        return sample_rollout(backend, s.tokenizer, texts, ids, mask)


def _iteration_figures(s: _PPO, iteration: int, beta: float, disagreement: float, times: tuple[float, ...],
                       stats: dict[str, float], exp) -> dict[str, float]:
    t0, t1, t2, t3 = times
    tokens = stats[M.GENERATED_TOKENS]
    memory = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]  # KiB on Linux
    if torch.cuda.is_available():
        memory.append(torch.cuda.max_memory_allocated() / 2**20)
    peaks = s.collectives.max(torch.tensor(memory, dtype=torch.float64, device=s.device)).tolist()
    critic = None if s.cfg.ppo.value_head == "shared" else s.accelerator.unwrap_model(s.actor_critic).critic
    members = [m.model for m in s.reward_source.members] if isinstance(s.reward_source, RewardModelEnsemble) else []
    perf = iteration_figures(ppo_shapes(s.policy, critic, members), exp.query_mask.sum(1), exp.response_mask.sum(1),
                             stats[M.EPOCHS_RUN], (t1 - t0, t2 - t1, t3 - t2), s.peak_flops,
                             s.collectives.world_size, s.collectives.sum)
    return {**perf,
        M.PEAK_RSS_MB: peaks[0], **({M.PEAK_GPU_MB: peaks[1]} if len(peaks) > 1 else {}),
        M.KL_COEF: beta, M.LR: s.scheduler.get_last_lr()[0], M.EPISODE: iteration * s.cfg.ppo.batch_size,
        M.ENSEMBLE_DISAGREEMENT: float(s.global_means({"d": disagreement})["d"]),
        M.TIME_GENERATION: t1 - t0, M.TIME_SCORING: t2 - t1, M.TIME_TRAINING: t3 - t2,
        M.TIME_COLLECTIVES: s.collectives.take_seconds(),
        M.TOKENS_PER_SECOND: tokens / max(t3 - t0, 1e-9),
        M.GENERATION_TOKENS_PER_SECOND: tokens / max(t1 - t0, 1e-9),
    }


def _held_out_eval(s: _PPO, iteration: int, progress) -> dict[str, float]:
    """eval/* on the held-out prompts at the iterations ppo.eval.every names (on every process); else nothing."""
    if s.evaluator is None or not eval_due(iteration, s.cfg.ppo.eval.every, s.cfg.ppo.num_iterations):
        return {}
    start = time.perf_counter()
    with progress.phase("held-out eval"), \
            policy_for_generation(s.accelerator, s.actor_critic) as policy:
        figures = s.evaluator(policy, s.reference)
    score = M.EVAL_GOLD_SCORE if M.EVAL_GOLD_SCORE in figures else M.EVAL_PROXY_SCORE  # a short note: the bar keeps its room
    progress.note(f"eval kl {figures[M.EVAL_KL]:.3g} {score.removeprefix('eval/')} {figures[score]:.3g}")
    return {**figures, M.TIME_EVAL: time.perf_counter() - start}


def _bookkeeping(s: _PPO, iteration: int, stats: dict[str, float], exp, progress) -> bool:
    """Log, keep samples, run the health checks, early stopping and the RM refresh, checkpoint.
    Returns True when training should stop here."""
    ppo = s.cfg.ppo
    s.writer.log(iteration, stats)
    s.logged = stats
    progress.advance(score=stats[M.SCORES], kl=stats[M.KL], beta=stats[M.KL_COEF])
    stop = _diagnose(s.monitor, ppo, iteration, stats, s.writer, s.kl_ctl, s.scheduler)
    improved, plateau = s.stopper.update(iteration, stats)
    weights = whole_weights(s.accelerator, s.policy) if improved else None  # gathered under FSDP (every process)
    if improved and s.main:
        save_pretrained_atomic(merged(s.policy), s.tokenizer, s.stage_dir / "best_policy", weights)
        s.writer.log(iteration, {"event": f"best {ppo.early_stopping.metric} = {s.stopper.best_value:.4g}"})
    if s.main and (iteration % ppo.sample_every == 0 or iteration == 1 or iteration == ppo.num_iterations):
        with open(s.stage_dir / "samples.jsonl", "a", encoding="utf-8") as samples:
            for i in range(min(4, exp.batch_size)):
                samples.write(json.dumps({"iteration": iteration, "prompt": exp.prompts[i],
                                          "response": exp.responses[i], "score": float(exp.scores[i])}) + "\n")
    if stop or plateau:
        reason = "a diagnostic asked to stop" if stop else f"{ppo.early_stopping.metric} stopped improving"
        s.writer.log(iteration, {"event": f"early stop: {reason}"})
        console.print(f"\\[ppo] stopping at iteration {iteration}: {reason}")
    elif s.refresher is not None and s.refresher.due(iteration):  # iterated RLHF: refit the RM on fresh pairs
        labelled = s.refresher.start(iteration, len(s.prompt_texts), lambda picked: _sample_pairs(s, picked))
        if labelled is None:  # a person labels the pairs: checkpoint here, stop, go on with --resume
            s.checkpointer.save(iteration, {"stats": s.logged, "stopped": False})
            raise LabelsNeeded(s.refresher.dir / f"round-{s.refresher.round + 1}" / "to_label.jsonl", ppo.reward_refresh.num_pairs)
        _refresh_reward_model(s, labelled, iteration)
    # every checkpoint.save_every iterations and at the end; stops here on SIGINT/SIGTERM
    s.checkpointer.safe_point(iteration, {"stats": s.logged, "stopped": stop or plateau},
                              final=iteration == ppo.num_iterations or stop or plateau)
    return stop or plateau


def _sample_pairs(s: _PPO, picked: list[int]) -> tuple[list[str], list[str], list[str]]:
    """Two responses per picked prompt from the current policy (PPO's sampling settings), for a refresh."""
    prompts, first_responses, second_responses = [], [], []
    for start in range(0, len(picked), s.cfg.ppo.batch_size):
        chunk = picked[start : start + s.cfg.ppo.batch_size]
        pair = _sample(s, chunk + chunk)
        prompts += pair.prompts[: len(chunk)]
        first_responses += pair.responses[: len(chunk)]
        second_responses += pair.responses[len(chunk) :]
    return prompts, first_responses, second_responses


def _refresh_reward_model(s: _PPO, labelled, at_iteration: int) -> None:
    """Fine-tune the RM members on the labelled pairs (+ replay) and score with them from now on."""
    metrics = s.refresher.finish(*labelled, score=lambda p, r: s.reward_source.score(p, r).scores)
    s.reward_source = None  # free the old members before loading the refreshed ones
    s.reward_source = _reward_models(s.refresher.model_paths, s.cfg.ppo, s)
    s.writer.log(at_iteration, metrics)
    console.print(f"\\[ppo] {escape(metrics['event'])}", highlight=False)


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


def _save(stage_dir: Path, s: _PPO, iteration: int) -> None:
    """Policy (causal LM, LoRA adapters merged in) and critic as HF checkpoints — or, with a shared
    head, `value_head.safetensors` — plus the KL controller state. Every process calls it (under FSDP
    the weights are gathered first); the main process writes."""
    tokenizer = s.tokenizer
    critic = s.accelerator.unwrap_model(s.actor_critic).critic
    policy_weights, critic_weights = whole_weights(s.accelerator, s.policy), whole_weights(s.accelerator, critic)
    if not s.main:
        return
    tokenizer.padding_side = "right"
    save_pretrained_atomic(merged(s.policy, in_place=True), tokenizer, stage_dir / "policy", policy_weights)
    if isinstance(critic, SharedValueHead):
        critic.save(stage_dir / VALUE_HEAD_FILE, critic_weights)
    else:
        save_pretrained_atomic(merged(critic, in_place=True), tokenizer, stage_dir / "value_model", critic_weights)
    tokenizer.padding_side = "left"
    state = {"iteration": iteration, "kl_controller": s.kl_ctl.state_dict()}
    tmp = stage_dir / "trainer_state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(stage_dir / "trainer_state.json")
