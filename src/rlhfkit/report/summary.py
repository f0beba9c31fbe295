"""Console summaries: a table of a stage's final figures, printed when it ends."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from rlhfkit.stages.common import StageOutput
from rlhfkit.training.progress import console


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_stage_summary(stage: str, output: StageOutput) -> None:
    table = Table(title=f"{stage}: done", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(output.metrics.items()):
        table.add_row(key, _fmt(value))
    console.print(table)
    console.print(f"checkpoint: [bold]{escape(str(output.checkpoint))}[/]", highlight=False, soft_wrap=True)


def _get(data: dict, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def headline_rows(summary: dict) -> list[tuple[str, object]]:
    """The figures a person wants first, from summary.json (None where a stage did not run)."""
    ev = summary.get("evaluation") or {}
    return [
        ("SFT held-out loss", _get(summary, "stages", "sft", "eval/loss")),
        ("RM held-out accuracy", _get(summary, "stages", "rm", "eval/accuracy")),
        ("RM accuracy vs gold preferences", ev.get("rm_gold_accuracy")),
        ("annotator agreement", _get(summary, "task", "annotation", "inter_annotator_agreement")),
        ("gold score SFT → PPO", (_get(ev, "before", "gold_mean"), _get(ev, "after", "gold_mean"))),
        ("proxy (RM) score SFT → PPO", (_get(ev, "before", "proxy_mean"), _get(ev, "after", "proxy_mean"))),
        (f"win rate PPO vs SFT ({ev.get('win_rate_judge', '—')})", ev.get("win_rate")),
        ("exact KL(π‖π_ref) after PPO", _get(ev, "after", "kl")),
        ("response length SFT → PPO", (_get(ev, "before", "length"), _get(ev, "after", "length"))),
        ("distinct-2 SFT → PPO", (_get(ev, "before", "distinct_2"), _get(ev, "after", "distinct_2"))),
        # Under the reference (the SFT model): word salad raises it; fluent text stays near SFT's.
        ("perplexity under SFT model SFT → PPO", (_get(ev, "before", "ref_perplexity"), _get(ev, "after", "ref_perplexity"))),
    ]


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return " → ".join(_cell(v) for v in value)
    return _fmt(value)


def print_run_summary(summary: dict) -> None:
    table = Table(title="rlhfkit run: summary", show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in headline_rows(summary):
        table.add_row(name, _cell(value))
    for stage, seconds in (summary.get("wall_time") or {}).items():
        table.add_row(f"wall time: {stage}", f"{seconds:.0f} s")
    console.print(table)
    console.print(f"run directory: [bold]{escape(str(summary.get('run_dir')))}[/]   "
                  f"report: [bold]{escape(str(summary.get('report')))}[/]", highlight=False, soft_wrap=True)
