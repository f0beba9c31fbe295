"""The report's throughput table: per PPO phase, seconds, tokens/s, model FLOPs and MFU per iteration.

Medians over the logged iterations (the first one carries warm-up costs; a median is not moved by
it). The figures are those of metrics.jsonl (`timing/*`, `perf/*`; training/flops.py counts the
FLOPs); the update row is policy and critic together, timed as one phase.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from rlhfkit.metric_names import M
from rlhfkit.report.plots import to_float

#: (phase, seconds, tokens/s, FLOPs (TFLOP) keys, MFU)
PHASES = (
    ("generation", M.TIME_GENERATION, M.GENERATION_TOKENS_PER_SECOND, (M.GENERATION_TFLOP,), M.GENERATION_MFU),
    ("scoring + experience", M.TIME_SCORING, M.EXPERIENCE_TOKENS_PER_SECOND, (M.EXPERIENCE_TFLOP,), M.EXPERIENCE_MFU),
    ("update (policy + critic)", M.TIME_TRAINING, M.UPDATE_TOKENS_PER_SECOND,
     (M.POLICY_UPDATE_TFLOP, M.CRITIC_UPDATE_TFLOP), M.UPDATE_MFU),
)


def _median(records: Sequence[Any], value: Callable[[dict], float | None]) -> float | None:
    values = [v for v in (value(r) for r in records if isinstance(r, dict)) if v is not None]
    return statistics.median(values) if values else None


def _key(name: str) -> Callable[[dict], float | None]:
    return lambda record: to_float(record.get(name))


def _flops(names: tuple[str, ...]) -> Callable[[dict], float | None]:
    def total(record: dict) -> float | None:
        parts = [to_float(record.get(n)) for n in names]
        return sum(parts) if all(p is not None for p in parts) else None
    return total


def perf_rows(records: Sequence[Any]) -> list[tuple[str, float | None, float | None, float | None, float | None]]:
    """(phase, seconds, tokens/s, TFLOP, MFU) medians; empty when no iteration logged perf/ figures."""
    if _median(records, _key(M.GENERATION_TFLOP)) is None:
        return []
    return [(phase, _median(records, _key(seconds)), _median(records, _key(tokens)), _median(records, _flops(flops)),
             _median(records, _key(mfu))) for phase, seconds, tokens, flops, mfu in PHASES]


def perf_table(records: Sequence[Any]) -> str:
    """An html table of `perf_rows`, with the peak it was measured against; '' without perf/ figures."""
    rows = perf_rows(records)
    if not rows:
        return ""

    def cell(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    body = "".join(f"<tr><td>{escape(phase)}</td><td class=\"num\">{cell(s, '.3g')}</td><td class=\"num\">{cell(t, ',.0f')}</td>"
                   f"<td class=\"num\">{cell(f, '.3g')}</td><td class=\"num\">{cell(m if m is None else 100 * m, '.2f')}</td></tr>"
                   for phase, s, t, f, m in rows)
    peak = _median(records, _key(M.PEAK_FLOPS))
    note = (f"MFU against {peak / 1e9:,.1f} GFLOP/s per device (timing/peak_flops)." if peak else
            "No MFU: the device's peak FLOP/s is unknown (set ppo.logging.peak_flops).")
    return ('<h3>Throughput per iteration (medians)</h3><table><thead><tr><th>phase</th><th>seconds</th>'
            '<th>tokens/s</th><th>TFLOP</th><th>MFU %</th></tr></thead>'
            f'<tbody>{body}</tbody></table><p class="note">{escape(note)} Model FLOPs of real tokens only '
            '(rlhfkit/training/flops.py); tokens/s counts generated tokens for generation, prompt + response tokens '
            '(× epochs for the update) otherwise; the update row is policy and critic together.</p>')
