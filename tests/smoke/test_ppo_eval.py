"""Held-out evaluation during PPO (`ppo.eval.every`) on the tiny random-init GPT-2.

- With `every: 1` each iteration's metrics line carries eval/kl, eval/proxy_score and
  eval/response_length, computed on the held-out prompts (ppo.data.eval_path), and the report
  draws them;
- evaluating does not change training: every other number of the run is the same as without it
  (the evaluation samples from its own seeded RNG, `torch.random.fork_rng`);
- the last point is the final evaluation's figure: `evaluate_policy` on the saved policy, same
  prompts, settings and seed, gives the same KL and proxy score;
- without held-out prompts the run is refused before any model loads.
(Resume: tests/smoke/test_resume.py; two processes: tests/smoke/test_ppo_ddp.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.data.records import load_records
from rlhfkit.data.templates import render_prompt
from rlhfkit.data.tokenize import tokenize_prompts
from rlhfkit.evaluation.policy_eval import evaluate_policy, evaluation_generation
from rlhfkit.metric_names import M
from rlhfkit.models.load import disable_dropout, freeze, load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import SAMPLE_TEXT
from rlhfkit.report.html import write_report
from rlhfkit.stages import ppo as ppo_stage
from rlhfkit.training.metrics import read_metrics

ITERATIONS = 3
EVAL_KEYS = (M.EVAL_KL, M.EVAL_PROXY_SCORE, M.EVAL_RESPONSE_LENGTH)


@pytest.fixture(scope="module")
def held_out_file(tmp_path_factory) -> Path:
    """Ten prompts unlike the training prompts (conftest's three-word windows): word pairs, reversed."""
    words = " ".join(SAMPLE_TEXT).split()
    path = tmp_path_factory.mktemp("held_out") / "eval_prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{words[i + 1]} {words[i]}"}) + "\n" for i in range(0, 50, 5)))
    return path


def _config(model_dir: Path, prompts: Path, *overrides: str):
    return load_config(None, [
        "seed=1", "device=cpu", f"ppo.policy.name_or_path={model_dir}", f"ppo.data.path={prompts}",
        "ppo.reward.callable=reward_fns:count_lowercase", f"ppo.num_iterations={ITERATIONS}",
        "ppo.batch_size=8", "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.ppo_epochs=2",
        "ppo.learning_rate=3e-3", "ppo.generation.max_new_tokens=8", "ppo.logging.progress=false",
        "eval.num_prompts=8", *overrides,
    ])


def _lines(stage_dir: Path) -> list[dict]:
    return [m for m in read_metrics(stage_dir / "metrics.jsonl") if M.KL in m]


def _training_numbers(line: dict) -> dict:
    return {k: v for k, v in line.items() if not k.startswith(("eval/", "timing/", "memory/")) and k != "time"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, prompts_file, held_out_file):
    """The same PPO run with and without `ppo.eval.every: 1` (run dirs as `rlhfkit ppo -o` makes them)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))  # reward_fns
    try:
        plain = tmp_path_factory.mktemp("plain") / "ppo"
        ppo_stage.run(_config(tiny_model_dir, prompts_file), plain)
        evaluated = tmp_path_factory.mktemp("evaluated") / "ppo"
        cfg = _config(tiny_model_dir, prompts_file, "ppo.eval.every=1", f"ppo.data.eval_path={held_out_file}")
        ppo_stage.validate(cfg)
        ppo_stage.run(cfg, evaluated)
    finally:
        sys.path.remove(str(Path(__file__).parent))
    return plain, evaluated, cfg


def test_every_iteration_logs_the_held_out_figures_and_the_report_plots_them(runs):
    plain, evaluated, _ = runs
    lines = _lines(evaluated)
    assert [line["step"] for line in lines] == list(range(1, ITERATIONS + 1))
    for line in lines:
        assert all(isinstance(line[key], float) for key in EVAL_KEYS), line
        assert 0 < line[M.EVAL_RESPONSE_LENGTH] <= 8 and line[M.TIME_EVAL] > 0
    assert lines[0][M.EVAL_KL] > 0  # measured after the first update: the policy has moved
    assert M.EVAL_GOLD_SCORE not in lines[0]  # no task, no gold judge
    assert not any(key.startswith("eval/") for line in _lines(plain) for key in line)

    html = write_report(evaluated.parent).read_text()
    assert "plots/ppo_eval_scores.png" in html and (evaluated.parent / "plots" / "ppo_eval_scores.png").stat().st_size > 0
    no_eval_html = write_report(plain.parent).read_text()
    assert "ppo_eval_scores" not in no_eval_html


def test_evaluating_does_not_change_training(runs):
    plain, evaluated, _ = runs
    assert [_training_numbers(line) for line in _lines(evaluated)] == [_training_numbers(line) for line in _lines(plain)]
    assert (plain / "samples.jsonl").read_text() == (evaluated / "samples.jsonl").read_text()


def test_the_last_point_is_the_final_evaluation(runs, tiny_model_dir, held_out_file, reward_fns):
    _, evaluated, cfg = runs
    tokenizer = load_tokenizer(ModelSection(name_or_path=str(tiny_model_dir)), "eval")
    tokenizer.padding_side = "left"
    policy = freeze(disable_dropout(load_causal_lm(ModelSection(name_or_path=str(evaluated / "policy")), tokenizer, "eval")))
    reference = freeze(disable_dropout(load_causal_lm(ModelSection(name_or_path=str(tiny_model_dir)), tokenizer, "eval")))
    examples = load_records(held_out_file, "prompts")[: cfg.eval.num_prompts]
    _, final = evaluate_policy(policy, reference, tokenizer, [render_prompt(tokenizer, e) for e in examples],
                               tokenize_prompts(examples, tokenizer, cfg.ppo.generation.max_prompt_length),
                               evaluation_generation(cfg), cfg.seed, {"proxy": reward_fns.count_lowercase})
    last = _lines(evaluated)[-1]
    assert last[M.EVAL_KL] == pytest.approx(final["kl"], rel=1e-5, abs=1e-6)
    assert last[M.EVAL_PROXY_SCORE] == pytest.approx(final["proxy_mean"], rel=1e-6)
    assert last[M.EVAL_RESPONSE_LENGTH] == pytest.approx(final["length"])


def test_no_held_out_prompts_is_refused_before_training(tiny_model_dir, prompts_file, reward_fns):
    cfg = _config(tiny_model_dir, prompts_file, "ppo.eval.every=2")
    with pytest.raises(ConfigError, match="ppo.eval.every needs held-out prompts: give ppo.data.eval_path"):
        ppo_stage.validate(cfg)


def test_with_lora_the_reference_is_the_adapter_free_policy(tmp_path, tiny_model_dir, prompts_file, held_out_file,
                                                            reward_fns):
    """Under ppo.lora the reference is the policy with its adapters off (no second model): the evaluation's
    exact KL is measured against it, positive once the adapters have moved, finite."""
    cfg = _config(tiny_model_dir, prompts_file, "ppo.eval.every=1", f"ppo.data.eval_path={held_out_file}",
                  "ppo.lora.r=4", "ppo.learning_rate=3e-2", "ppo.num_iterations=2")
    ppo_stage.run(cfg, tmp_path / "ppo")
    kls = [line[M.EVAL_KL] for line in _lines(tmp_path / "ppo")]
    assert len(kls) == 2 and all(0 < kl < 1e3 for kl in kls), kls
