"""The pre-flight check: before any model is loaded, print the plan's verdict; refuse a run that
cannot fit.

A run is refused (ConfigError: one line, exit 2) when even a plan 15 % too high — the accuracy
bench/memory_plan.py checks — would not fit the detected devices (CUDA: the smallest GPU's total
memory; CPU: available RAM). Between "fits" and that margin it warns. `preflight: warn` turns the
refusal into a warning, `preflight: off` skips the check. A model the planner cannot read (a hub
name not in the local cache) is reported as not planned, and the run goes on.
"""

from __future__ import annotations

import os
from dataclasses import replace

from rich.markup import escape

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import RunConfig
from rlhfkit.memory.advice import best_fix, needed
from rlhfkit.memory.devices import DeviceBudget, detect
from rlhfkit.memory.inputs import PlanOverrides, plan_inputs_from_config
from rlhfkit.memory.plan import plan_memory
from rlhfkit.memory.report import gb, verdict_line

MARGIN = 0.15


def launcher_overrides() -> PlanOverrides:
    """Sharding as `accelerate launch` tells its processes (environment variables it sets)."""
    zero = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    return PlanOverrides(
        n_devices=int(os.environ.get("WORLD_SIZE", "1")),
        zero_stage=int(zero) if zero and os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" else None,
        fsdp=os.environ.get("ACCELERATE_USE_FSDP") == "true",
        offload_optimizer=os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE") == "cpu",
    )


def refusal(stage: str, need: float, budget: DeviceBudget, largest: str, fix: str) -> str:
    return (f"{stage}: the memory plan needs {gb(need)} per device, more than the {gb(budget.capacity)} of "
            f"{budget.description} (largest term: {largest}); {fix}; `rlhfkit plan` shows the full table, "
            "--set preflight=warn runs anyway")


def check(cfg: RunConfig, stages: list[str], budget: DeviceBudget | None = None) -> None:
    """Print each stage's one-line verdict; raise ConfigError for a run that cannot fit."""
    if cfg.preflight == "off":
        return
    from rlhfkit.training.progress import console

    budget = budget or detect(cfg.device)
    overrides = replace(launcher_overrides(), device=budget.kind)
    for stage in stages:
        try:
            inputs = plan_inputs_from_config(cfg, stage, overrides)  # type: ignore[arg-type]
        except ConfigError as err:
            console.print(f"\\[plan] {stage}: not planned: {escape(str(err))}", highlight=False, soft_wrap=True)
            continue
        plan = plan_memory(inputs)
        need = needed(plan, budget.kind)
        console.print(escape(verdict_line(plan, budget.capacity, budget.kind, budget.description)),
                      highlight=False, soft_wrap=True)
        if need <= budget.capacity:
            continue
        largest = plan.peak.largest()
        advice = best_fix(inputs, budget.capacity, budget.kind)
        if advice is None:
            fix = "no change the planner knows helps"
        else:
            kind = "best fix" if advice.fits else "largest single saving (not enough alone)"
            fix = f"{kind}: {advice.label} → {gb(advice.needed)} ({advice.how})"
        message = refusal(stage, need, budget, f"{largest.model} {largest.name} {gb(largest.bytes)}", fix)
        if cfg.preflight == "error" and need * (1 - MARGIN) > budget.capacity:
            raise ConfigError(message)
        console.print(f"[yellow]warning[/] {escape(message)}", highlight=False, soft_wrap=True)
