"""`rlhfkit run` end to end: on your own data (tiny model), and the bundled task (--quick)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from typer.testing import CliRunner

from rlhfkit.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 1000:
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100


def _check_report(run_dir: Path) -> str:
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    assert images, "the report shows no plots"
    for image in images:
        assert _png_ok(run_dir / image), image
    return html


def test_run_on_user_data_with_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    tiny = str(tiny_model_dir)
    args = ["run", "--config", str(ROOT / "configs/example.yaml"), "-o", str(out),
            "--set", f"sft.model.name_or_path={tiny}",
            "--set", f"sft.data.path={ROOT / 'examples/data/sft.jsonl'}",
            "--set", f"rm.data.path={ROOT / 'examples/data/preferences.jsonl'}",
            "--set", f"ppo.data.path={ROOT / 'examples/data/prompts.jsonl'}",
            "--set", "sft.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}",
            "--set", "rm.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}",
            "--set", "ppo.num_iterations=2", "--set", "ppo.batch_size=8", "--set", "ppo.mini_batch_size=4",
            "--set", "ppo.gradient_accumulation_steps=1", "--set", "ppo.generation.max_new_tokens=8",
            "--set", "eval.num_prompts=4", "--set", "rm.ensemble_size=2", "--set", "ppo.reward.ensemble=min",
            "--set", "sft.logging.progress=false", "--set", "rm.logging.progress=false", "--set", "ppo.logging.progress=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "rm", "rm-1", "ppo"}  # a two-member RM ensemble
    resolved = (out / "config.yaml").read_text()
    assert str(out / "rm-1" / "model") in resolved
    ppo_lines = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert any(line.get("reward/ensemble_disagreement", 0) > 0 for line in ppo_lines)
    ev = summary["evaluation"]
    assert ev["win_rate_judge"] == "proxy" and 0.0 <= ev["win_rate"] <= 1.0
    assert ev["before"]["kl"] == pytest.approx(0.0, abs=1e-5)  # the SFT policy *is* the reference
    assert ev["after"]["kl"] > 0
    AutoModelForCausalLM.from_pretrained(out / "ppo" / "policy")
    AutoModelForSequenceClassification.from_pretrained(out / "rm" / "model")
    assert str(out / "rm" / "model") in (out / "config.yaml").read_text()
    _check_report(out)
    # The run directory is protected against accidental reuse.
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.slow
def test_quick_default_task_end_to_end(tmp_path):
    out = tmp_path / "quick"
    result = runner.invoke(app, ["run", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    ev = summary["evaluation"]
    for key in ("win_rate", "rm_gold_accuracy"):
        assert 0.0 <= ev[key] <= 1.0
    for side in ("before", "after"):
        assert {"gold_mean", "proxy_mean", "kl", "length", "distinct_2", "ref_perplexity"} <= set(ev[side])
    assert summary["task"]["annotation"]["n_pairs"] > 0
    ppo_lines = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert all("gold/score" in line for line in ppo_lines if "objective/kl" in line)
    html = _check_report(out)
    assert "overoptimisation" in html
    assert len(html.split("<img")) - 1 >= 8
