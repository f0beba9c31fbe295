"""report.html from a synthetic run directory: plots exist and are real PNGs, numbers and text
appear (escaped), partial runs say what did not run, odd values never raise."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from rlhfkit.report.html import report_command, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _full_run(root: Path) -> Path:
    run = root / "run-full"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\nppo:\n  num_iterations: 12  # <b>not bold</b>\n")

    sft = [{"stage": "sft", "step": 0, "time": 0.0, "eval/loss": 3.9, "eval/perplexity": 49.4}]
    for step in range(1, 9):
        sft.append({"stage": "sft", "step": step, "time": step * 1.0, "train/loss": 3.8 - 0.25 * step, "train/lr": 1e-4})
        if step % 4 == 0:
            sft.append({"stage": "sft", "step": step, "time": step * 1.0, "eval/loss": 3.6 - 0.2 * step,
                        "eval/perplexity": math.exp(3.6 - 0.2 * step)})
    sft.insert(3, {"stage": "sft", "step": 2, "time": 2.0, "train/loss": "nan"})  # a non-finite value, stored as text
    _jsonl(run / "sft" / "metrics.jsonl", sft)

    rm = [{"stage": "rm", "step": 0, "eval/loss": 0.69, "eval/accuracy": 0.5, "eval/margin": 0.0}]
    for step in range(1, 7):
        rm.append({"stage": "rm", "step": step, "train/loss": 0.69 - 0.05 * step, "train/accuracy": 0.5 + 0.06 * step,
                   "train/margin": 0.2 * step})
        if step % 2 == 0:
            rm.append({"stage": "rm", "step": step, "eval/loss": 0.7 - 0.04 * step, "eval/accuracy": 0.5 + 0.05 * step,
                       "eval/margin": 0.15 * step})
    rm.append({"stage": "rm", "step": 6, "reference/score_mean": 0.1, "reference/score_std": 1.3})
    _jsonl(run / "rm" / "metrics.jsonl", rm)

    ppo = []
    for it in range(1, 13):
        kl = 0.4 * it
        ppo.append({
            "stage": "ppo", "step": it, "time": 3.0 * it,
            "objective/kl": kl, "objective/entropy": 30 - it, "objective/scores": 0.1 * it,
            "objective/scores_std": 0.5, "objective/non_score_reward": -0.05 * kl, "objective/rlhf_reward": 0.1 * it - 0.05 * kl,
            "policy/approxkl_avg": 0.01, "policy/clipfrac_avg": 0.05 + 0.01 * it, "policy/entropy_avg": 1.5,
            "loss/policy_avg": -0.01 * it, "loss/value_avg": 1.0 / it, "val/clipfrac_avg": 0.1, "val/ratio": 1.0,
            "kl_coef": 0.05 * 0.98 ** it, "rollout/response_length": 20 + it, "rollout/eos_fraction": 0.9,
            "timing/generation": 1.5, "timing/scoring": 0.3, "timing/training": 1.1,
            "reward/ensemble_disagreement": 0.0,
            "gold/score": 0.5 + 0.1 * it - 0.012 * it * it,  # peaks, then falls: the over-optimisation shape
        })
    ppo[4]["objective/kl"] = "inf"
    ppo[5]["gold/score"] = "nan"
    ppo.insert(7, {"stage": "ppo", "step": 7, "event": "rm_refresh"})
    ppo.append({"stage": "ppo", "step": 12, "diagnostic": "KL above target for 5 iterations <check beta>"})
    _jsonl(run / "ppo" / "metrics.jsonl", ppo)
    _jsonl(run / "ppo" / "samples.jsonl", [
        {"iteration": 1, "prompt": "old prompt", "response": "old iteration response", "score": 0.1},
        {"iteration": 12, "prompt": "tell me a fortune", "response": f"latest {EVIL}", "score": 1.25},
        {"iteration": 12, "prompt": "another", "response": "a second latest one", "score": "nan"},
    ])

    prompts = [f"prompt number {i}" for i in range(15)]
    _jsonl(run / "eval" / "before.jsonl", [
        {"prompt": p, "response": f"sft answer {i}", "gold": 0.3, "proxy": 0.1} for i, p in enumerate(prompts)])
    after = [{"prompt": p, "response": f"ppo answer {i}", "gold": 0.6, "proxy": 1.1} for i, p in enumerate(prompts)]
    after[0]["response"] = EVIL
    _jsonl(run / "eval" / "after.jsonl", after)
    stats = {"kl": 0.0, "length": 20.0, "distinct_1": 0.4, "distinct_2": 0.7, "ref_perplexity": 12.0}
    (run / "eval").joinpath("metrics.json").write_text(json.dumps({
        "before": {"gold_mean": 0.3125, "proxy_mean": 0.1, **stats},
        "after": {"gold_mean": 0.6875, "proxy_mean": 1.1, **stats, "kl": 4.321},
        "win_rate": 0.8123, "win_rate_judge": "gold", "rm_gold_accuracy": 0.734,
    }))
    (run / "summary.json").write_text(json.dumps({
        "stages": {"sft": {"eval/loss": 2.0417, "initial_eval/loss": 3.9, "train/loss": 1.8},
                   "rm": {"eval/accuracy": 0.8, "eval/loss": 0.46},
                   "ppo": {"objective/kl": 4.8}},
        "wall_time": {"sft": 12.5, "rm": 8.0, "ppo": 95.0, "eval": 20.0},
        "task": {"annotation": {"pairs": 100, "note": "<b>labelled</b>"}},
    }))
    return run


def _images(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)


def test_full_run_report(tmp_path):
    run = _full_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html" and path.is_file()
    html = path.read_text(encoding="utf-8")

    images = _images(html)
    names = {Path(src).name for src in images}
    assert {"sft_loss.png", "rm_accuracy.png", "ppo_scores.png", "ppo_kl.png", "ppo_kl_coef.png", "ppo_entropy.png",
            "ppo_length.png", "ppo_timing.png", "overoptimisation.png"} <= names
    for src in images:
        assert src.startswith("plots/") and not src.startswith("/")  # relative: opens from the run dir
        data = (run / src).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1024, src

    # headline numbers
    for text in ("2",  # SFT eval loss from summary.json
                 "80.0%",  # RM held-out accuracy
                 "73.4%",  # RM agreement with gold
                 "0.3125 → 0.6875",  # gold SFT → PPO
                 "81.2%",  # win rate
                 "4.321",  # KL on held-out prompts
                 "12.5s", "1m 35s"):  # wall time
        assert text in html, text
    # sections in order, partial-run messages absent
    order = [html.index(f'<h2 id="{key}"') for key in ("summary", "sft", "rm", "ppo", "overopt", "eval", "samples",
                                                        "warnings", "config")]
    assert order == sorted(order)
    assert "stage not run" not in html
    # escaping of data text
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") >= 2  # eval sample table and latest PPO samples
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>labelled</b>" not in html
    # events, diagnostics, latest samples, no network or JavaScript
    assert "rm_refresh" in html
    assert "KL above target for 5 iterations &lt;check beta&gt;" in html
    assert "a second latest one" in html and "old iteration response" not in html
    assert "prompt number 11" in html and "prompt number 12" not in html  # first 12 eval prompts
    assert "http://" not in html and "https://" not in html and "<script" not in html.lower().replace("&lt;script", "")

    # a second write over the first works (atomic replace) and keeps the same plots
    assert write_report(run) == path and set(_images(path.read_text())) == set(images)


def test_sft_only_partial_run(tmp_path, capsys):
    run = tmp_path / "partial"
    _jsonl(run / "sft" / "metrics.jsonl", [
        {"stage": "sft", "step": 0, "time": 0, "eval/loss": 4.0},
        {"stage": "sft", "step": 5, "time": 1, "train/loss": 3.0},
        {"stage": "sft", "step": 10, "time": 2, "train/loss": 2.5, "eval/loss": "nan"},
    ])
    (run / "sft" / "metrics.jsonl").open("a").write('{"stage": "sft", "step": 11, "train/lo')  # torn last line
    path = report_command(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "PPO: stage not run." in html and "Reward model: stage not run." in html
    assert "Evaluation not run" in html and "No PPO samples logged" in html
    assert html.count("—") >= 4  # missing headline values
    assert [Path(s).name for s in _images(html)] == ["sft_loss.png"]
    assert str(path) in capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize("content", ["", "not json\n[1, 2]\n", '{"step": "x", "objective/kl": {"a": 1}, "event": 3}\n'])
def test_odd_files_never_raise(tmp_path, content):
    run = tmp_path / "odd"
    for name in ("sft/metrics.jsonl", "rm/metrics.jsonl", "ppo/metrics.jsonl", "ppo/samples.jsonl", "eval/before.jsonl"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(content)
    (run / "summary.json").write_text('{"stages": [], "wall_time": {"sft": "nan"}, "task": null}')
    (run / "eval" / "metrics.json").write_text('{"before": 1, "after": {"kl": "inf"}, "win_rate": null}')
    html = write_report(run).read_text()
    assert "could not be rendered" not in html
    assert "<img" not in html


def test_missing_run_dir(tmp_path):
    from rlhfkit.config.load import ConfigError

    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")
    with pytest.raises(ConfigError):
        report_command(tmp_path / "nope")


def test_event_labels_fit_on_a_plot():
    from rlhfkit.report.plots import _short_event

    assert _short_event("early stop") == "early stop"
    assert _short_event("RM refresh 2: 241 new pairs from the policy (+768 replayed)") == "RM refresh 2"
    long = "x" * 40
    assert _short_event(long) == "x" * 23 + "…" and len(_short_event(long)) == 24
