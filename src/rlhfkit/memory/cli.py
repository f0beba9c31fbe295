"""`rlhfkit plan`: the memory a run needs per device, by phase, and what would make it fit.

    rlhfkit plan                                   # the bundled default run, on this machine
    rlhfkit plan --config my.yaml --gpus 8 --gpu a100-80g --zero-stage 3
    rlhfkit plan --model 70b --gpu a100-80g        # a Llama-3-70B PPO under the default hyper-parameters
    rlhfkit plan --model 70b --seed-assumptions    # the seed's ~840 GB table, then the full accounting
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rlhfkit.config.load import ConfigError, default_config_path, load_config
from rlhfkit.config.stages import RunConfig
from rlhfkit.memory.devices import detect, gpu_memory, parse_size
from rlhfkit.memory.inputs import PlanOverrides, plan_inputs_from_config
from rlhfkit.memory.plan import plan_memory


def _config(config: Path | None, overrides: list[str], model: str | None) -> RunConfig:
    if config is None and model is None:
        return load_config(default_config_path("default"), overrides)
    return load_config(config, overrides)


def _budget(gpus: int | None, gpu: str | None, memory: str | None, device: str) -> tuple[str, int, float, str]:
    """(device kind, count, bytes per device, description): the flags, else this machine."""
    if gpu and memory:
        raise ConfigError("give --gpu or --gpu-memory, not both")
    if gpu or memory:
        capacity = gpu_memory(gpu) if gpu else parse_size(memory)
        n = gpus or 1
        return "cuda", n, capacity, f"per device ({n} × {gpu or memory})"
    found = detect(device)
    n = gpus or found.count
    return found.kind, n, found.capacity, found.description


def plan(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config; default: the bundled default run.")] = None,
    set: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key (repeatable).")] = None,
    stage: Annotated[str, typer.Option("--stage", help="Stage to plan: ppo (four models), sft or rm.")] = "ppo",
    model: Annotated[Optional[str], typer.Option("--model", help="Preset (70b, 13b, 8b, 7b, smollm2-135m, gpt2, …) or local model dir, for every model.")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=1, help="Devices (processes) the run is spread over.")] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="Named device: a100-80g, a100-40g, h100-80g, h200, l4-24g, …")] = None,
    gpu_memory: Annotated[Optional[str], typer.Option("--gpu-memory", help="Memory per device, e.g. 80GiB or 24GB.")] = None,
    zero_stage: Annotated[Optional[int], typer.Option("--zero-stage", min=0, max=3, help="DeepSpeed ZeRO stage 0-3.")] = None,
    fsdp: Annotated[bool, typer.Option("--fsdp", help="FSDP full sharding (planned as ZeRO-3).")] = False,
    offload_optimizer: Annotated[bool, typer.Option("--offload-optimizer", help="Optimizer states in host RAM.")] = False,
    offload_frozen: Annotated[bool, typer.Option("--offload-frozen", help="Reference and reward models in host RAM between uses.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass.")] = False,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32 | amp | half | mixed (default: from the config's dtype and mixed_precision).")] = None,
    seed_assumptions: Annotated[bool, typer.Option("--seed-assumptions", help="Also show the seed document's accounting (16-bit weights and gradients only).")] = False,
) -> None:
    """Memory per device for a run, by phase (generation, experience, update), and what would make it fit."""
    from rlhfkit.training.progress import console

    try:
        if stage not in ("ppo", "sft", "rm"):
            raise ConfigError(f"--stage {stage!r}: choose ppo, sft or rm")
        if precision not in (None, "fp32", "amp", "half", "mixed"):
            raise ConfigError(f"--precision {precision!r}: choose fp32, amp, half or mixed")
        cfg = _config(config, list(set or []), model)
        kind, n, capacity, where = _budget(gpus, gpu, gpu_memory, cfg.device)
        overrides = PlanOverrides(model=model, n_devices=n, zero_stage=zero_stage, fsdp=fsdp, offload_optimizer=offload_optimizer,
                                  offload_frozen=offload_frozen, gradient_checkpointing=gradient_checkpointing, precision=precision,
                                  device=kind)
        memory_plan = plan_memory(plan_inputs_from_config(cfg, stage, overrides))  # type: ignore[arg-type]
    except (ConfigError, ValueError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    from rlhfkit.memory.report import print_plan, print_seed_table

    if seed_assumptions:
        print_seed_table(console, memory_plan, capacity, kind)
    print_plan(console, memory_plan, capacity, kind, where)
