"""Does the plan fit, on how many devices, and which changes would make it fit (each with its figure).

Fitting compares the peak phase plus a stated allowance with one device's memory. The allowance
covers what the tensor terms leave out: on CUDA the context, cuBLAS/NCCL workspaces and caching-
allocator fragmentation (1 GB + 10 % of the tensors, the order PyTorch's memory docs and
DeepSpeed's estimators leave free); on CPU 10 % for allocator fragmentation only (available RAM
is measured with the interpreter and libraries already loaded).

Changes are tried in a stated order of cost — the first ones only slow a run down a little, the
later ones change the algorithm or need hardware — each alone, then cumulatively in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rlhfkit.memory.plan import MemoryPlan, PlanInputs, Settings, plan_memory, step_tokens
from rlhfkit.memory.terms import GB

ALLOWANCE = {"cuda": (1.0 * GB, 0.10), "cpu": (0.0, 0.10)}
MAX_DEVICES = 4096


def allowance(tensor_bytes: float, device_kind: str) -> float:
    fixed, fraction = ALLOWANCE[device_kind]
    return fixed + fraction * tensor_bytes


def needed(plan: MemoryPlan, device_kind: str) -> float:
    """Per-device bytes the plan needs: its peak phase plus the allowance."""
    peak = plan.peak.total
    return peak + allowance(peak, device_kind)


def fits(plan: MemoryPlan, capacity: float, device_kind: str) -> bool:
    return needed(plan, device_kind) <= capacity


def min_devices(inputs: PlanInputs, capacity: float, device_kind: str) -> int | None:
    """Smallest device count that fits under the run's own sharding; None when more devices do not
    help (no ZeRO/FSDP: every device holds everything) or even MAX_DEVICES do not fit."""
    if inputs.settings.zero_stage == 0:
        return 1 if fits(plan_memory(inputs), capacity, device_kind) else None
    n = 1
    while n <= MAX_DEVICES:
        if fits(plan_memory(_with(inputs, n_devices=n)), capacity, device_kind):
            return n
        n += 1 if n < 64 else n // 8
    return None


def _with(inputs: PlanInputs, **changes) -> PlanInputs:
    return replace(inputs, settings=replace(inputs.settings, **changes))


@dataclass(frozen=True)
class Change:
    label: str
    how: str  # the config key or launcher setting
    apply: Callable[[Settings], Settings] | None  # None: not applicable to these settings


def candidate_changes(inputs: PlanInputs, device_kind: str = "cuda") -> list[Change]:
    """The memory levers, cheapest first; those already on are left out, and on CPU those that only
    move memory to host RAM or to other processes on the same machine."""
    s, ppo, gpu = inputs.settings, inputs.stage == "ppo", device_kind == "cuda"
    prefix = "ppo" if ppo else f"{inputs.stage}.optim"
    out: list[Change] = []
    if not s.gradient_checkpointing:
        out.append(Change("gradient checkpointing (≈ +33 % compute)", "--gradient-checkpointing",
                          lambda x: replace(x, gradient_checkpointing=True)))
    if ppo and s.micro_batch_tokens is not None:  # packed micro-batches: the budget, not the rows, sizes them
        effective = min(s.micro_batch_tokens, step_tokens(s))  # a step holds no more
        if effective > s.prompt_len + s.response_len:  # at or below one row's width a row goes alone: a smaller budget changes nothing
            budget = effective // 2
            out.append(Change(f"token budget {s.micro_batch_tokens} → {budget} (same step)",
                              f"--set ppo.micro_batch_tokens={budget}", lambda x: replace(x, micro_batch_tokens=budget)))
    elif s.mini_batch > 1:
        half = s.mini_batch // 2
        key = "mini_batch_size" if ppo else "batch_size"
        out.append(Change(f"mini-batch {s.mini_batch} → {half}, accumulation ×2 (same step)",
                          f"--set {prefix}.{key}={half} --set {prefix}.gradient_accumulation_steps={s.grad_accum * 2}",
                          lambda x: replace(x, mini_batch=half, grad_accum=x.grad_accum * 2)))
    if gpu and ppo and (not s.lora_rank or s.reward_models) and not s.offload_frozen:
        out.append(Change("frozen models (reference, reward) in host RAM outside the experience phase",
                          "DeepSpeed offload of ref/RM (not in rlhfkit yet)", lambda x: replace(x, offload_frozen=True)))
    if s.precision in ("fp32", "amp") and gpu:
        out.append(Change("bf16 weights + fp32 master and moments (mixed precision)", "DeepSpeed bf16 (ZeRO's 2+2+12 B; DeepSpeed is not in rlhfkit yet)",
                          lambda x: replace(x, precision="mixed")))
    elif s.precision in ("fp32", "amp"):  # torch AdamW on bf16 weights: 2 + 2 + 4 bytes, no master copy
        key = "ppo.policy.dtype" if ppo else f"{inputs.stage}.model.dtype"
        out.append(Change("bf16 weights and moments (no fp32 master copy)", f"--set {key}=bf16",
                          lambda x: replace(x, precision="half")))
    if ppo and not s.shared_value_head:
        out.append(Change("shared value head (no critic model; changes the algorithm)", "--set ppo.value_head=shared",
                          lambda x: replace(x, shared_value_head=True)))
    if ppo and not s.lora_rank:
        out.append(Change("LoRA r=8 (reference = adapters off)", "--set ppo.lora.r=8",
                          lambda x: replace(x, lora_rank=8)))
    if gpu and s.n_devices > 1 and s.zero_stage < 3:
        out.append(Change(f"ZeRO-3 / FSDP over the {s.n_devices} devices", "accelerate launch with FSDP2 (configs/accelerate/fsdp.yaml)",
                          lambda x: replace(x, zero_stage=3)))
    if gpu and not s.offload_optimizer:
        out.append(Change("optimizer states in host RAM (ZeRO-Offload)", "DeepSpeed offload_optimizer: cpu (not in rlhfkit yet)",
                          lambda x: replace(x, offload_optimizer=True)))
    return out


@dataclass(frozen=True)
class Advice:
    label: str
    how: str
    needed: float  # per-device bytes after the change
    fits: bool


def advise(inputs: PlanInputs, capacity: float, device_kind: str) -> tuple[list[Advice], list[Advice]]:
    """(each change alone, the cheapest-first cumulative combination up to the first that fits)."""
    single, combined = [], []
    settings = inputs.settings
    for change in candidate_changes(inputs, device_kind):
        alone = needed(plan_memory(replace(inputs, settings=change.apply(inputs.settings))), device_kind)
        single.append(Advice(change.label, change.how, alone, alone <= capacity))
        if combined and combined[-1].fits:
            continue  # the combination already fits: list the remaining changes alone only
        settings = change.apply(settings)
        together = needed(plan_memory(replace(inputs, settings=settings)), device_kind)
        combined.append(Advice(change.label, change.how, together, together <= capacity))
    if device_kind == "cuda" and inputs.settings.zero_stage < 3:
        how = "accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes {n} (FSDP2)"
        alone = _sharded(inputs, capacity, device_kind)
        if alone is not None:
            single.append(Advice(f"ZeRO-3 / FSDP over {alone[0]} devices (smallest count that fits)",
                                 how.format(n=alone[0]), alone[1], True))
        if combined and not combined[-1].fits and (after := _sharded(replace(inputs, settings=settings), capacity, device_kind)):
            combined.append(Advice(f"… and ZeRO-3 / FSDP over {after[0]} devices", how.format(n=after[0]), after[1], True))
    return single, combined


def _sharded(inputs: PlanInputs, capacity: float, device_kind: str) -> tuple[int, float] | None:
    """(smallest device count, bytes needed) under ZeRO-3, or None if no count fits."""
    n = min_devices(_with(inputs, zero_stage=3), capacity, device_kind)
    if n is None or n <= inputs.settings.n_devices:
        return None
    return n, needed(plan_memory(_with(inputs, zero_stage=3, n_devices=n)), device_kind)


def best_fix(inputs: PlanInputs, capacity: float, device_kind: str) -> Advice | None:
    """The cheapest single change that fits, else the one that saves most."""
    single, _ = advise(inputs, capacity, device_kind)
    fitting = [a for a in single if a.fits]
    if fitting:
        return fitting[0]
    return min(single, key=lambda a: a.needed) if single else None


def seed_table(inputs: PlanInputs) -> dict[str, float]:
    """The seed's accounting: 16-bit weights (+ 16-bit gradients for the trained models), nothing
    else; the reward model and critic the same size as the policy; no sharding."""
    p = inputs.policy.n_params()
    return {"policy (training)": 4 * p, "reference": 2 * p, "reward model": 2 * p, "value model (training)": 4 * p}
