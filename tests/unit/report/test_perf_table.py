"""The report's throughput table: medians per phase from metrics.jsonl records."""

from __future__ import annotations

from rlhfkit.metric_names import M
from rlhfkit.report.perf import perf_rows, perf_table


def _record(step: int, gen_s: float, mfu: float) -> dict:
    return {"step": step, M.TIME_GENERATION: gen_s, M.TIME_SCORING: 1.0, M.TIME_TRAINING: 4.0,
            M.GENERATION_TOKENS_PER_SECOND: 100.0 * step, M.EXPERIENCE_TOKENS_PER_SECOND: 50.0,
            M.UPDATE_TOKENS_PER_SECOND: 40.0, M.GENERATION_TFLOP: 0.5, M.EXPERIENCE_TFLOP: 1.5,
            M.POLICY_UPDATE_TFLOP: 6.0, M.CRITIC_UPDATE_TFLOP: 2.0, M.GENERATION_MFU: mfu,
            M.EXPERIENCE_MFU: 0.2, M.UPDATE_MFU: 0.4, M.PEAK_FLOPS: 1e11}


def test_perf_rows_are_medians_per_phase():
    # generation seconds 9 (warm-up), 2, 3 -> median 3; tokens/s 100, 200, 300 -> 200; MFU 0.01, 0.05, 0.04 -> 0.04
    records = [_record(1, 9.0, 0.01), _record(2, 2.0, 0.05), _record(3, 3.0, 0.04), {"event": "best"}]
    rows = perf_rows(records)
    assert rows[0] == ("generation", 3.0, 200.0, 0.5, 0.04)
    assert rows[1] == ("scoring + experience", 1.0, 50.0, 1.5, 0.2)
    assert rows[2] == ("update (policy + critic)", 4.0, 40.0, 8.0, 0.4)  # policy + critic FLOPs
    html = perf_table(records)
    assert "100.0 GFLOP/s" in html and "<td class=\"num\">4.00</td>" in html  # MFU 0.04 as a percentage


def test_no_perf_figures_no_table():
    assert perf_rows([{"step": 1, M.TIME_GENERATION: 1.0}]) == [] and perf_table([]) == ""
