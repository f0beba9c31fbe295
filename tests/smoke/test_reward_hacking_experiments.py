"""experiments/reward_hacking.py end to end, at toy scale, on a `rlhfkit run --quick` directory.

The figures in docs/reward-hacking.md come from this script on the default run; here it only has to
run every experiment and write what the docs describe (results, tables, plots, run directories)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "reward_hacking.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "quick"
    result = CliRunner().invoke(app, ["run", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _experiment(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--threads", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr  # rich writes its console to stderr


def test_compare_runs_every_variant_and_writes_the_table(quick_run, tmp_path):
    out = tmp_path / "out"
    _experiment("compare", "--run", str(quick_run), "--out", str(out), "--rm-pairs", "40", "--iterations", "2",
                "--refresh-every", "1", "--seeds", "1")
    root = out / "proxy-40pairs"
    results = json.loads((root / "results.json").read_text())["compare"]
    variants = set(results["per_seed"])
    assert {"single", "ensemble-min", "ensemble-uncertainty", "refresh"} <= variants
    for name in variants:
        run = root / name / "seed-1"
        assert (run / "report.html").is_file() and (run / "ppo" / "policy").is_dir()
        row = results["per_seed"][name][0]
        assert 0.0 <= row["win_rate_vs_sft"] <= 1.0 and row["kl"] >= 0.0
    members = sorted((root / "rm-members-40pairs").glob("rm-*/done.json"))
    assert len(members) == 3
    assert len((root / "rm-members-40pairs" / "pairs.jsonl").read_text().splitlines()) == 40
    table = (root / "results.md").read_text()
    assert all(f"| {name} |" in table for name in variants)
    for plot in ("compare_gold.png", "compare_proxy.png", "compare_kl.png", "compare_overopt_single.png"):
        assert (root / "plots" / plot).stat().st_size > 1000, plot
    # the refresh variant really refreshed: a round on disk and its metrics logged
    refresh = root / "refresh" / "seed-1" / "ppo"
    assert (refresh / "refresh" / "round-1" / "round.json").is_file()
    assert any("refresh/round" in json.loads(line) for line in (refresh / "metrics.jsonl").read_text().splitlines())

    # a second call reuses finished runs, and refuses ones made with other settings
    _experiment("compare", "--run", str(quick_run), "--out", str(out), "--rm-pairs", "40", "--iterations", "2",
                "--refresh-every", "1", "--seeds", "1", "--only", "single")
    clash = subprocess.run([sys.executable, str(SCRIPT), "compare", "--run", str(quick_run), "--out", str(out),
                            "--rm-pairs", "40", "--iterations", "3", "--seeds", "1", "--only", "single", "--threads", "1"],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert clash.returncode != 0 and "other settings" in clash.stderr


def test_overopt_and_provoke(quick_run, tmp_path):
    out = tmp_path / "out"
    _experiment("overopt", "--run", str(quick_run), "--out", str(out), "--iterations", "3")
    overopt = json.loads((out / "results.json").read_text())["overopt"]
    assert overopt["iterations"] == 3 and overopt["gold_peak"]["iteration"] in (1, 2, 3)
    assert (out / "plots" / "overopt_vs_sqrt_kl.png").is_file() and (out / "plots" / "overopt_sweep_gold.png").is_file()

    printed = _experiment("provoke", "--run", str(quick_run), "--out", str(out), "--iterations", "2")
    provoke = json.loads((out / "results.json").read_text())["provoke"]
    assert "ppo.kl.kl_coef=0.0" in provoke["overrides"]
    assert set(provoke["warnings"]) == {"default run", "provoked"}
    assert "warning(s)" in printed
