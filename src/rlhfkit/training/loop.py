"""The supervised training loop shared by the SFT and reward-model stages.

Built on accelerate: device placement, mixed precision, gradient accumulation and multiple
processes come from `Accelerator`; this file only says what one step is. A stage supplies
`loss_fn(model, batch) -> (loss, stats)` and `evaluate(model) -> metrics`; the loop does
AdamW + warmup/decay schedule, gradient clipping, periodic evaluation, a live progress bar
with the running loss, and one metrics.jsonl line per `log_every` optimiser steps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import get_scheduler

from rlhfkit.config.sections import LoggingSection, OptimSection
from rlhfkit.training.metrics import MetricsWriter
from rlhfkit.training.progress import StageProgress

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[torch.nn.Module], dict[str, float]]


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch; each process gets seed + rank·100003 (N+ detail 7)."""
    process_seed = seed + rank * 100003
    random.seed(process_seed)
    np.random.seed(process_seed % 2**32)
    torch.manual_seed(process_seed)
    return process_seed


def make_accelerator(device: str, mixed_precision: str, gradient_accumulation_steps: int = 1) -> Accelerator:
    """An Accelerator honouring `device` (auto: CUDA, then MPS, then CPU)."""
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


@dataclass(frozen=True)
class TrainPlan:
    """Numbers derived from the config and data size, printed at start-up, never written back."""

    num_examples: int
    batch_size: int
    gradient_accumulation_steps: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    def describe(self) -> str:
        return (
            f"{self.num_examples} examples, batch {self.batch_size} × accumulation "
            f"{self.gradient_accumulation_steps}, {self.steps_per_epoch} optimiser steps/epoch, "
            f"{self.total_steps} steps total ({self.warmup_steps} warmup)"
        )


def plan_training(num_examples: int, optim: OptimSection, world_size: int = 1) -> TrainPlan:
    micro_batches = math.ceil(num_examples / (optim.batch_size * world_size))
    steps_per_epoch = max(1, micro_batches // optim.gradient_accumulation_steps)
    total = optim.max_steps or max(1, math.ceil(steps_per_epoch * optim.epochs))
    return TrainPlan(
        num_examples=num_examples,
        batch_size=optim.batch_size,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=int(optim.warmup_ratio * total),
    )


@dataclass
class TrainResult:
    steps: int
    last_train: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)


def _seeded_loader(dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(list(dataset), batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator)


def train_loop(
    *,
    accelerator: Accelerator,
    model: torch.nn.Module,
    train_data: Sequence[Any],
    collate: Callable,
    loss_fn: LossFn,
    evaluate: EvalFn | None,
    optim: OptimSection,
    logging: LoggingSection,
    writer: MetricsWriter,
    seed: int,
    description: str,
) -> TrainResult:
    """Train `model` in place. Returns the final train and eval metrics."""
    plan = plan_training(len(train_data), optim, accelerator.num_processes)
    accelerator.print(f"[{writer.stage}] {plan.describe()}")
    loader = _seeded_loader(train_data, optim.batch_size, collate, seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=optim.learning_rate,
        eps=optim.adam_eps,
        weight_decay=optim.weight_decay,
    )
    scheduler = get_scheduler(
        optim.lr_scheduler if optim.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=plan.warmup_steps,
        num_training_steps=plan.total_steps,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    result = TrainResult(steps=0)
    running: dict[str, float] = {}
    running_count = 0
    eval_every = logging.eval_every or plan.steps_per_epoch
    with StageProgress(description, plan.total_steps, enabled=logging.progress) as progress:
        while result.steps < plan.total_steps:
            for batch in loader:
                model.train()
                with accelerator.accumulate(model):
                    loss, stats = loss_fn(model, batch)
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and optim.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                for key, value in {"loss": loss.item(), **stats}.items():
                    running[key] = running.get(key, 0.0) + float(value)
                running_count += 1
                if not accelerator.sync_gradients:
                    continue
                result.steps += 1
                progress.advance(loss=running["loss"] / running_count)
                if result.steps % logging.log_every == 0 or result.steps == plan.total_steps:
                    result.last_train = {f"train/{k}": v / running_count for k, v in running.items()}
                    extra = {"train/lr": scheduler.get_last_lr()[0], "train/epoch": result.steps / plan.steps_per_epoch}
                    if grad_norm is not None:
                        extra["train/grad_norm"] = float(grad_norm)
                    writer.log(result.steps, {**result.last_train, **extra})
                    running, running_count = {}, 0
                if evaluate is not None and (result.steps % eval_every == 0 or result.steps == plan.total_steps):
                    model.eval()
                    with torch.no_grad():
                        result.last_eval = {f"eval/{k}": v for k, v in evaluate(model).items()}
                    writer.log(result.steps, result.last_eval)
                    progress.note(", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in result.last_eval.items()))
                if result.steps >= plan.total_steps:
                    break
    return result
