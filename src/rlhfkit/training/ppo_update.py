"""The PPO update: `ppo_epochs` passes over one Experience, in shuffled mini-batches.

An optimiser step takes `mini_batch_size` × `gradient_accumulation_steps` episodes on this process.
They go through the models as `gradient_accumulation_steps` micro-batches of `mini_batch_size`
rows, through accelerate's `accumulate` / `backward` / `clip_grad_norm_`, so DDP, FSDP and
DeepSpeed synchronise the gradients and `mixed_precision` applies — or, with
`ppo.micro_batch_tokens`, as micro-batches of at most that many real tokens, each packed into one
sequence without padding (training/micro_batches.py), their count varying per step and process:
all but the last under `no_sync`, the last one syncing (not DeepSpeed, whose engine counts them).

Loss aggregation — the gradient of an optimiser step is that of the token mean over every valid
response token of the whole step: all its micro-batches on all processes. Each micro-batch's loss
is therefore its token *sum* divided by N_step, the step's global token count (one all-reduce per
epoch gives every step's count), multiplied by W·A: accelerate divides each backward by A (the
accumulation steps) and DDP averages gradients over the W processes. So 1 process × 64 episodes,
2 processes × 32 and 8 accumulated micro-batches of 8 take the same step (tests/smoke/test_ppo_ddp.py),
and so does any token-budget grouping of the same rows.

A NaN/Inf loss or gradient norm on any process voids that optimiser step on every process
(gradients zeroed, no step) and ends the update, checked once at each step boundary. Statistics
stay on the device until the end, then cross the process boundary in one all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from rlhfkit.algos.losses import ppo_policy_loss, value_loss
from rlhfkit.algos.masked import masked_sum
from rlhfkit.config.stages import PPOConfig
from rlhfkit.metric_names import M
from rlhfkit.rollout.experience import model_inputs
from rlhfkit.rollout.types import Experience
from rlhfkit.training.distributed import Collectives
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import clip_grad_norm
from rlhfkit.training.micro_batches import step_micro_batches

# Statistics kept as token means over each optimiser step (every micro-batch of every process weighted
# by its share of the step's tokens), then averaged over the steps: like the loss, they do not depend on
# how a step is split into micro-batches and processes.
_MEANS = ("pg_loss", "vf_loss", "clipfrac", "approx_kl", "ratio", "vf_clipfrac", "entropy")


@dataclass
class UpdateResult:
    stats: dict[str, float]
    fault: str | None  # the tensor that voided a step (None: every step was taken)


def _clip_and_check(accelerator: Accelerator, actor_critic, max_grad_norm: float | None) -> torch.Tensor | None:
    """Clip gradients; the norms (of the synced gradients, the same on every process) or None.

    DDP / one process: policy and critic are clipped separately (their gradient scales differ).
    FSDP shards parameters, so a norm is only right over the whole prepared module: there both are
    clipped together. DeepSpeed's engine clips all of them together too, and has stepped already:
    its norm is that of the step it took (a NaN there is logged, not voided)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return clip_grad_norm(accelerator, actor_critic.parameters(), max_grad_norm).reshape(1)
    limit = max_grad_norm or math.inf
    module = accelerator.unwrap_model(actor_critic)
    return torch.stack([torch.as_tensor(accelerator.clip_grad_norm_(part.parameters(), limit))
                        for part in (module.policy, module.critic)])


def ppo_update(exp: Experience, actor_critic, optimizer, scheduler, accelerator: Accelerator, ppo: PPOConfig,
               generator: torch.Generator, collectives: Collectives, guard: FaultGuard, iteration: int,
               train_policy: bool = True, first_order: torch.Tensor | None = None,
               on_micro_batch: Callable[[], None] | None = None) -> UpdateResult:
    """Train the prepared actor-critic on `exp` (this process's share of the batch). `train_policy=False`
    (critic warm-up) weighs the policy and entropy terms by 0: only the value loss trains. (They stay in
    the graph with zero gradients, so DDP still finds a gradient for every parameter; the policy then
    moves by AdamW's decoupled weight decay alone, lr·wd·θ per step.) `first_order`: the first epoch's
    shuffle when the caller drew it already (to run the experience forwards in the same micro-batches).
    `on_micro_batch()` is called after each micro-batch (a progress bar)."""
    budget = ppo.micro_batch_tokens
    scale = collectives.world_size * ppo.gradient_accumulation_steps  # undoes DDP's 1/W and accelerate's 1/A
    query_lengths, response_lengths = exp.query_mask.sum(1), exp.response_mask.sum(1)
    device = exp.response_mask.device
    sums = {name: torch.zeros((), device=device) for name in _MEANS}
    sum_ratio = torch.zeros((), device=device)  # per-micro-batch ratio means, for their spread
    sum_sq_ratio = torch.zeros((), device=device)
    ratio_max = torch.full((), -math.inf, device=device)
    first_ratio_dev = torch.zeros((), device=device)
    micro_batches, steps_taken, epochs_run, fault = 0, 0, 0, None
    policy_weight = 1.0 if train_policy else 0.0
    entropy_in_loss = train_policy and ppo.entropy_coef != 0  # else the entropy is only logged: no graph for it
    actor_critic.train()
    for epoch in range(ppo.ppo_epochs):
        order = first_order if epoch == 0 and first_order is not None else torch.randperm(exp.batch_size, generator=generator)
        plan = step_micro_batches(order.to(device), query_lengths, response_lengths, ppo.mini_batch_size,
                                  ppo.gradient_accumulation_steps, budget)
        local_tokens = torch.stack([response_lengths[torch.cat(step)].sum() for step in plan]).float()
        step_tokens = collectives.sum(local_tokens).clamp(min=1)  # (num_steps,) N_step over all processes
        epoch_kl = torch.zeros((), device=device)
        for step, step_batches in enumerate(plan):
            non_finite_loss = torch.zeros((), dtype=torch.bool, device=device)
            norm_by = step_tokens[step] / scale
            for k, rows in enumerate(step_batches):
                mb = exp.select(rows)
                mb = mb.cropped() if budget is not None else mb  # loss tensors only as wide as the longest response
                mask = mb.response_mask.float()
                last = k == len(step_batches) - 1
                with _micro_batch_sync(accelerator, actor_critic, fixed_count=budget is None, last=last):
                    out = actor_critic(*model_inputs(mb, packed=budget is not None), ppo.generation.temperature,
                                       entropy_grad=entropy_in_loss)
                    pg_loss, pg = ppo_policy_loss(out.logprobs, mb.logprobs, mb.advantages, mask, ppo.clip_range, norm_by)
                    vf_loss, vf = value_loss(out.values, mb.values, mb.returns, mask, ppo.clip_range_value, norm_by)
                    entropy = masked_sum(out.entropy, mask) / norm_by
                    bonus = ppo.entropy_coef * entropy if entropy_in_loss else 0.0
                    loss = policy_weight * (pg_loss - bonus) + ppo.vf_coef * vf_loss
                    if guard.injected(iteration, "loss"):
                        loss = loss * math.nan
                    non_finite_loss |= ~torch.isfinite(loss.detach())
                    accelerator.backward(loss)  # every process joins the gradient sync, even with a NaN
                    if last:
                        fault = _finish_step(accelerator, actor_critic, optimizer, scheduler, ppo, collectives, guard,
                                             iteration, non_finite_loss)
                with torch.no_grad():  # statistics, on the device, weighted by this batch's share of the step's tokens
                    share = mask.sum() / step_tokens[step]
                    sums["pg_loss"] += pg_loss.detach() / scale  # = its token sum / N_step
                    sums["vf_loss"] += vf_loss.detach() / scale
                    sums["entropy"] += entropy.detach() / scale
                    for name, value in (("clipfrac", pg["clipfrac"]), ("approx_kl", pg["approx_kl"]),
                                        ("ratio", pg["ratio_mean"]), ("vf_clipfrac", vf["clipfrac"])):
                        sums[name] += value * share
                    sum_ratio += pg["ratio_mean"]
                    sum_sq_ratio += pg["ratio_mean"].square()
                    ratio_max = torch.maximum(ratio_max, pg["ratio_max"])
                    epoch_kl += pg["approx_kl"] * share
                    if micro_batches == 0:  # the on-policy check: must be 0 with dropout off
                        first_ratio_dev = ((torch.exp(out.logprobs.detach() - mb.logprobs) - 1).abs() * mask).max()
                    micro_batches += 1
                if on_micro_batch is not None:
                    on_micro_batch()
            if fault is not None:
                break
            steps_taken += 1
        epochs_run = epoch + 1
        if fault is not None:
            break
        if ppo.target_kl is not None:  # early stop of the epoch loop on the (global) mean approx-KL
            mean_kl = float(collectives.sum(epoch_kl)) / len(plan)
            if mean_kl > ppo.target_kl:
                break
    actor_critic.eval()
    return UpdateResult(_finish_stats(sums, (sum_ratio, sum_sq_ratio), ratio_max, first_ratio_dev, micro_batches,
                                      steps_taken, epochs_run, collectives), fault)


def _micro_batch_sync(accelerator: Accelerator, actor_critic, fixed_count: bool, last: bool):
    """The gradient-sync context of one micro-batch. A fixed count per step: accelerate's `accumulate`
    (which DeepSpeed's engine needs). A token budget gives each process its own count, so the sync
    cannot follow a counter: every micro-batch but the step's last runs under `no_sync` and the last
    syncs — each process joins exactly one gradient all-reduce per step whatever its count."""
    if fixed_count:
        return accelerator.accumulate(actor_critic)
    return nullcontext() if last else accelerator.no_sync(actor_critic)


def _finish_step(accelerator: Accelerator, actor_critic, optimizer, scheduler, ppo: PPOConfig, collectives: Collectives,
                 guard: FaultGuard, iteration: int, non_finite_loss: torch.Tensor) -> str | None:
    """Clip, check and take (or void) the optimiser step once a step's gradients are complete."""
    fault = None
    norms = _clip_and_check(accelerator, actor_critic, ppo.max_grad_norm)
    if collectives.any(bool(non_finite_loss)):  # on any process: the same verdict everywhere
        fault = guard.flag("loss")
    elif norms is not None:
        fault = guard.non_finite(iteration, grad_norm=norms)
    if fault is None:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return fault


def _finish_stats(sums, ratio_moments, ratio_max, first_ratio_dev, micro_batches: int, steps: int, epochs_run: int,
                  collectives: Collectives) -> dict[str, float]:
    """Step means over every process, from one all-reduce and one host sync."""
    count = torch.tensor(float(micro_batches), device=ratio_max.device)
    totals = collectives.sum(torch.stack([*(sums[name] for name in _MEANS), *ratio_moments, count])).tolist()
    mean = dict(zip(_MEANS, (value / max(steps, 1) for value in totals[: len(_MEANS)])))
    n, ratio_sum, ratio_sq = max(totals[-1], 1.0), totals[len(_MEANS)], totals[len(_MEANS) + 1]
    ratio_var = (ratio_sq - ratio_sum ** 2 / n) / (n - 1) if n > 1 else 0.0  # spread of the micro-batch ratio means
    maxima = collectives.max(torch.stack([ratio_max, first_ratio_dev])).tolist() if micro_batches else [0.0, 0.0]
    return {
        M.POLICY_LOSS: mean["pg_loss"],
        M.VALUE_LOSS: mean["vf_loss"],
        M.CLIPFRAC: mean["clipfrac"],
        M.APPROX_KL: mean["approx_kl"],
        M.FIRST_RATIO_DEV: maxima[1],
        M.ENTROPY_TRAIN: mean["entropy"],
        M.VALUE_CLIPFRAC: mean["vf_clipfrac"],
        M.RATIO: mean["ratio"],
        M.RATIO_VAR: max(ratio_var, 0.0),
        M.RATIO_MAX: maxima[0],
        M.EPOCHS_RUN: float(epochs_run),
    }
