"""Console summaries: a table of a stage's final figures, printed when it ends."""

from __future__ import annotations

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
    console.print(f"checkpoint: [bold]{output.checkpoint}[/]")
