"""The plan as rich tables and as the one-line verdict the pre-flight check prints."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rlhfkit.memory.advice import advise, allowance, min_devices, needed, seed_table
from rlhfkit.memory.plan import MemoryPlan
from rlhfkit.memory.terms import GB


def gb(x: float) -> str:
    if x >= 1000 * GB:
        return f"{x / GB:,.0f} GB"
    return f"{x / GB:.3g} GB" if x >= 0.1 * GB else f"{x / 1e6:.3g} MB"


def _describe(plan: MemoryPlan) -> str:
    i, s = plan.inputs, plan.inputs.settings
    count = i.policy.n_params()
    size = f"{count / 1e9:.3g}B" if count >= 1e9 else f"{count / 1e6:.3g}M"
    parts = [i.stage, f"{'policy' if i.stage == 'ppo' else 'model'} {i.policy.name} ({size} parameters)", f"precision {s.precision}"]
    if i.stage == "ppo":
        batch = f"mini-batch {s.mini_batch}" + (f", packed ≤ {s.micro_batch_tokens} tokens" if s.micro_batch_tokens else "")
        parts += [f"rollout {s.rollout_batch} × ({s.prompt_len}+{s.response_len}) tokens", batch,
                  f"RMs {s.reward_models}", "shared value head" if s.shared_value_head else "critic model"]
        if s.lora_rank:
            parts.append(f"LoRA r={s.lora_rank}")
    else:
        parts += [f"batch {s.mini_batch} × {s.response_len} tokens"]
    parts.append(f"ZeRO-{s.zero_stage} over {s.n_devices}" if s.zero_stage else f"{s.n_devices} device(s), no sharding")
    if s.gradient_checkpointing:
        parts.append("gradient checkpointing")
    if s.offload_optimizer:
        parts.append("optimizer offloaded")
    if s.offload_frozen:
        parts.append("frozen models offloaded")
    return ", ".join(parts)


def plan_table(plan: MemoryPlan, capacity: float, device_kind: str) -> Table:
    """One row per (model, term), one column per phase: bytes per device."""
    table = Table(title=f"memory per device — {escape(_describe(plan))}", title_justify="left")
    table.add_column("model")
    table.add_column("term")
    for phase in plan.phases:
        table.add_column(phase.name, justify="right")
    table.add_column("formula", overflow="fold")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    formulas: dict[tuple[str, str], str] = {}
    for phase in plan.phases:
        for term in phase.terms:
            key = (term.model, term.name)
            rows.setdefault(key, {})[phase.name] = term.bytes
            formulas.setdefault(key, term.formula)
    for (model, name), values in rows.items():
        table.add_row(escape(model), escape(name), *(gb(values[p.name]) if p.name in values else "" for p in plan.phases),
                      escape(formulas[(model, name)]))
    table.add_section()
    table.add_row("", "[bold]tensors", *(f"[bold]{gb(p.total)}" for p in plan.phases), "")
    table.add_row("", "allowance", *(gb(allowance(p.total, device_kind)) for p in plan.phases),
                  "CUDA context + 10 % fragmentation" if device_kind == "cuda" else "10 % fragmentation")
    verdict = lambda p: p.total + allowance(p.total, device_kind) <= capacity  # noqa: E731
    table.add_row("", "[bold]needed", *(f"[bold {'green' if verdict(p) else 'red'}]{gb(p.total + allowance(p.total, device_kind))}"
                                        for p in plan.phases), f"of {gb(capacity)} per device")
    if plan.host:
        table.caption = f"host RAM per process for what is offloaded: {gb(sum(t.bytes for t in plan.host))}"
    return table


def advice_table(plan: MemoryPlan, capacity: float, device_kind: str) -> Table:
    single, combined = advise(plan.inputs, capacity, device_kind)
    table = Table(title="changes, cheapest first: needed per device", title_justify="left")
    table.add_column("change")
    table.add_column("alone", justify="right")
    table.add_column("cumulative", justify="right")
    table.add_column("how", overflow="fold")
    mark = lambda a: f"[{'green' if a.fits else 'red'}]{gb(a.needed)}"  # noqa: E731
    cumulative = {a.label: a for a in combined}
    for one in single:
        both = cumulative.pop(one.label, None)
        table.add_row(escape(one.label), mark(one), mark(both) if both else "", escape(one.how))
    for rest in cumulative.values():  # a step only the combination has (ZeRO-3 on top of the rest)
        table.add_row(escape(rest.label), "", mark(rest), escape(rest.how))
    return table


def verdict_line(plan: MemoryPlan, capacity: float, device_kind: str, where: str) -> str:
    """'[plan] ppo: needs 3.1 GB per device at the update phase (largest: policy activations 1.2 GB) of 20 GB: fits'."""
    peak = plan.peak
    need = needed(plan, device_kind)
    largest = peak.largest()
    ok = "fits" if need <= capacity else "does NOT fit"
    return (f"[plan] {plan.inputs.stage}: needs {gb(need)} per device at its {peak.name} phase (largest term: "
            f"{largest.model} {largest.name} {gb(largest.bytes)}) of {gb(capacity)} {where}: {ok}")


def print_plan(console: Console, plan: MemoryPlan, capacity: float, device_kind: str, where: str) -> None:
    console.print(plan_table(plan, capacity, device_kind))
    need = needed(plan, device_kind)
    console.print(escape(verdict_line(plan, capacity, device_kind, where)), highlight=False)
    if need > capacity or plan.inputs.settings.n_devices > 1:
        n = min_devices(plan.inputs, capacity, device_kind)
        if plan.inputs.settings.zero_stage == 0:
            console.print("more devices do not help without sharding (every device holds every model); "
                          "see ZeRO-3 below or run `rlhfkit plan --zero-stage 3 --gpus N`", highlight=False)
        elif n is None:
            console.print("no device count up to 4096 fits under these settings", highlight=False)
        else:
            console.print(f"smallest device count that fits under these settings: {n}", highlight=False)
    if need > capacity:
        console.print(advice_table(plan, capacity, device_kind))


def print_seed_table(console: Console, plan: MemoryPlan, capacity: float, device_kind: str) -> None:
    """The seed's 70B table, recomputed under its own assumptions, next to the full accounting."""
    rows = seed_table(plan.inputs)
    table = Table(title="the seed's accounting: 16-bit weights (+16-bit gradients when training), nothing else",
                  title_justify="left")
    table.add_column("model")
    table.add_column("memory", justify="right")
    table.add_column("seed's figure (70B)", justify="right")
    seed = {"policy (training)": "~280GB", "reference": "~140GB", "reward model": "~140GB", "value model (training)": "~280GB"}
    for name, value in rows.items():
        table.add_row(name, gb(value), seed[name])
    total = sum(rows.values())
    table.add_section()
    table.add_row("[bold]total", f"[bold]{gb(total)}", "~840GB (A100 80G × 12)")
    console.print(table)
    console.print(f"under those assumptions {total / capacity:.1f} devices of {gb(capacity)}; the full accounting "
                  f"(optimizer states, activations, logits, KV cache, allowance) at precision {plan.inputs.settings.precision} "
                  f"needs {gb(needed(plan, device_kind))} per device under the settings below — see docs/memory.md",
                  highlight=False)
