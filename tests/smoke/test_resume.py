"""Failure and recovery, end to end: real processes killed with SIGKILL / stopped with SIGTERM,
resumed with --resume, and compared with an uninterrupted run of the same seed; NaN updates;
bad inputs at the CLI; refusal to overwrite a run.

Tolerance: none. On CPU with a fixed seed and one thread every run here is bitwise
deterministic, and a checkpoint restores every piece of state (weights, AdamW moments, LR
schedule, the Python/NumPy/torch RNGs, the prompt sampler's and the update shuffler's generators,
the data position, KL controller, monitor, fault counter), so the resumed run must reproduce the
uninterrupted one exactly: every metrics.jsonl number except wall-clock timings, and every weight
of the final policy (`torch.equal`). Any drift would point at state that is not checkpointed.

Kill points are deterministic, not timed: `RLHFKIT_CHECKPOINT_PAUSE=N` parks the writer half-way
through checkpoint N (model weights written, optimizer and state not yet); the reward callable
below parks inside a chosen iteration's scoring step (`GATE_ENV`), or sends the process a signal
there. Subprocesses run `python -m rlhfkit.cli` with one thread, like the in-process runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.models.tiny import SAMPLE_TEXT
from rlhfkit.training.checkpoint import OPTIMIZER_FILE, is_complete, latest_checkpoint, list_checkpoints
from rlhfkit.training.faults import INJECT_ENV
from rlhfkit.training.metrics import read_metrics

HERE = Path(__file__).parent
runner = CliRunner()

# ------------------------------------------------------------------ the reward callables the runs use

GATE_ENV = "RLHFKIT_TEST_GATE"  # "DIR:N" park in the N-th call (this process); "SIGINT:N" send SIGINT to self there
_calls = 0


def gated_count_lowercase(prompts: list[str], responses: list[str]) -> list[float]:
    """+1 per lowercase letter; optionally parks or signals at its N-th call (see GATE_ENV)."""
    global _calls
    _calls += 1
    where, _, at = os.environ.get(GATE_ENV, "").rpartition(":")
    if where and _calls == int(at):
        if where.startswith("SIG"):
            os.kill(os.getpid(), getattr(signal, where))
        else:
            Path(where, "reached").write_text(str(os.getpid()))
            while not Path(where, "release").exists():
                time.sleep(0.02)
    return [float(sum("a" <= c <= "z" for c in r)) for r in responses]


def raising_reward(prompts: list[str], responses: list[str]) -> list[float]:
    raise ZeroDivisionError("the user's reward code divided by zero")


# ------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """Both this process and the subprocesses import the callables above as `test_resume:…`."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv(GATE_ENV, raising=False)
    monkeypatch.delenv(INJECT_ENV, raising=False)
    import test_resume

    test_resume._calls = 0


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    words = " ".join(SAMPLE_TEXT).split()
    path = tmp_path_factory.mktemp("resume_data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": " ".join(words[i : i + 3])}) + "\n" for i in range(0, 48, 3)))
    return path


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    words = ["good", "great", "happy", "love", "joy", "wise"]
    path = tmp_path_factory.mktemp("resume_sft") / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": "the quick", "response": " " + " ".join(words[(i + k) % 6] for k in range(4))})
                            + "\n" for i in range(36)))
    return path


ITERATIONS = 6


def ppo_args(model: Path, prompts: Path, *extra: str, callable_: str = "test_resume:gated_count_lowercase") -> list[str]:
    sets = [
        "seed=3", "device=cpu", f"ppo.policy.name_or_path={model}", f"ppo.data.path={prompts}",
        f"ppo.reward.callable={callable_}", f"ppo.num_iterations={ITERATIONS}", "ppo.batch_size=8",
        "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.ppo_epochs=2", "ppo.learning_rate=3e-3",
        "ppo.generation.max_new_tokens=8", "ppo.kl.kl_coef=0.05", "ppo.sample_every=2", "ppo.logging.progress=false",
        "ppo.checkpoint.save_every=2", "ppo.checkpoint.keep_last=2", *extra,
    ]
    return ["ppo", *[a for s in sets for a in ("--set", s)]]


def sft_args(model: Path, data: Path, *extra: str) -> list[str]:
    sets = [
        "seed=3", "device=cpu", f"sft.model.name_or_path={model}", f"sft.data.path={data}", "sft.optim.batch_size=4",
        "sft.optim.gradient_accumulation_steps=2", "sft.optim.epochs=2", "sft.optim.learning_rate=1e-2",
        "sft.data.eval_fraction=0.1", "sft.logging.log_every=1", "sft.logging.eval_every=3", "sft.logging.progress=false",
        "sft.checkpoint.save_every=2", *extra,
    ]
    return ["sft", *[a for s in sets for a in ("--set", s)]]


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def numbers(stage_dir: Path) -> list[dict]:
    """metrics.jsonl without wall-clock fields."""
    return [{k: v for k, v in m.items() if k != "time" and not k.startswith(("timing/", "memory/"))}
            for m in read_metrics(stage_dir / "metrics.jsonl")]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_same_run(a: Path, b: Path, model: str) -> None:
    """Same metrics line for line (timings aside), same final weights bit for bit."""
    lines_a, lines_b = numbers(a), numbers(b)
    assert lines_a == lines_b
    wa, wb = weights(a / model), weights(b / model)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


class Proc:
    """`python -m rlhfkit.cli ARGS` in the background, one thread, output to a file."""

    def __init__(self, tmp: Path, *args: str, **env: str):
        self.log = tmp / f"proc-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **env}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", *map(str, args)],
                                         stdout=out, stderr=subprocess.STDOUT, env=full_env)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"process ended (rc {self.proc.returncode}) before the kill point:\n{self.output}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"kill point not reached in {timeout}s:\n{self.output}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL


def gate(tmp: Path, name: str, call: int) -> tuple[Path, str]:
    directory = tmp / name
    directory.mkdir()
    return directory, f"{directory}:{call}"


@pytest.fixture(scope="module")
def ppo_baseline(tmp_path_factory, tiny_model_dir, prompts_file) -> Path:
    """The uninterrupted PPO run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    sys.path.insert(0, str(HERE))
    try:
        result = cli(*ppo_args(tiny_model_dir, prompts_file), "-o", out)
    finally:
        sys.path.remove(str(HERE))
    assert result.exit_code == 0, result.output
    return out / "ppo"


# ------------------------------------------------------------------ SIGKILL


def test_ppo_killed_anywhere_resumes_to_the_same_result(tmp_path, tiny_model_dir, prompts_file, ppo_baseline):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "ppo" / "checkpoints"

    # 1. SIGKILL half-way through writing checkpoint 4: weights written, optimizer and state not yet.
    first = Proc(tmp_path, *ppo_args(tiny_model_dir, prompts_file), "-o", run_dir, RLHFKIT_CHECKPOINT_PAUSE="4")
    first.wait_for(lambda: any(ckpts.glob("step-00000004.tmp-*/PAUSED")))
    first.kill()
    partial = next(ckpts.glob("step-00000004.tmp-*"))
    assert (partial / "policy.safetensors").exists() and not (partial / OPTIMIZER_FILE).exists()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000002"]  # the torn one does not count
    assert not (run_dir / "ppo" / "done.json").exists()

    # 2. --resume continues from checkpoint 2 (the .tmp one is deleted, never read); SIGKILL in iteration 5
    #    (third reward call of this process: iterations 3, 4, 5), after checkpoint 4 was written.
    gate_dir, spec = gate(tmp_path, "gate", 3)
    second = Proc(tmp_path, "ppo", "--resume", run_dir, **{GATE_ENV: spec})
    second.wait_for(lambda: (gate_dir / "reached").exists())
    second.kill()
    assert "resuming from" in second.output and "step-00000002" in second.output
    assert not list(ckpts.glob("*.tmp-*"))
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000002", "step-00000004"]

    # 3. --resume from checkpoint 4 to the end: exactly the uninterrupted run.
    result = cli("ppo", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert "step-00000004" in result.output
    assert_same_run(ppo_baseline, run_dir / "ppo", "policy")
    assert (run_dir / "ppo" / "samples.jsonl").read_text() == (ppo_baseline / "samples.jsonl").read_text()
    assert json.loads((run_dir / "ppo" / "trainer_state.json").read_text()) == \
        json.loads((ppo_baseline / "trainer_state.json").read_text())
    assert (run_dir / "ppo" / "done.json").exists()
    # A finished stage is not run again.
    again = cli("ppo", "--resume", run_dir)
    assert again.exit_code == 0 and "finished before" in again.output


def test_held_out_evaluation_points_survive_a_kill_and_resume(tmp_path, tiny_model_dir, prompts_file):
    """ppo.eval.every: the evaluation samples from its own seeded RNG, so the points after a resume are those
    of the uninterrupted run, and so is everything else."""
    words = " ".join(SAMPLE_TEXT).split()
    held_out = tmp_path / "eval_prompts.jsonl"  # reversed word pairs: not the training prompts
    held_out.write_text("".join(json.dumps({"prompt": f"{words[i + 1]} {words[i]}"}) + "\n" for i in range(0, 36, 6)))
    args = ppo_args(tiny_model_dir, prompts_file, "ppo.eval.every=2", f"ppo.data.eval_path={held_out}")
    baseline = tmp_path / "baseline"
    assert cli(*args, "-o", baseline).exit_code == 0
    # SIGKILL half-way through checkpoint 4 (the points at 2 and 4 were logged), then resume from checkpoint 2
    run_dir = tmp_path / "run"
    first = Proc(tmp_path, *args, "-o", run_dir, RLHFKIT_CHECKPOINT_PAUSE="4")
    first.wait_for(lambda: any((run_dir / "ppo" / "checkpoints").glob("step-00000004.tmp-*/PAUSED")))
    first.kill()
    result = cli("ppo", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert [line["step"] for line in numbers(run_dir / "ppo") if "eval/kl" in line] == [2, 4, 6]
    assert_same_run(baseline / "ppo", run_dir / "ppo", "policy")


@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "group_by_length"])
def test_sft_killed_while_checkpointing_resumes_to_the_same_result(tmp_path, tiny_model_dir, sft_file, grouped):
    extra = [f"sft.optim.group_by_length={str(grouped).lower()}"]
    baseline = tmp_path / "baseline"
    assert cli(*sft_args(tiny_model_dir, sft_file, *extra), "-o", baseline).exit_code == 0

    run_dir = tmp_path / "run"
    ckpts = run_dir / "sft" / "checkpoints"
    proc = Proc(tmp_path, *sft_args(tiny_model_dir, sft_file, *extra), "-o", run_dir, RLHFKIT_CHECKPOINT_PAUSE="6")
    proc.wait_for(lambda: any(ckpts.glob("step-00000006.tmp-*/PAUSED")))
    proc.kill()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000002", "step-00000004"]

    result = cli("sft", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert "step-00000004" in result.output
    assert_same_run(baseline / "sft", run_dir / "sft", "model")
    assert json.loads((run_dir / "sft" / "done.json").read_text()) == json.loads((baseline / "sft" / "done.json").read_text())


# ------------------------------------------------------------------ SIGTERM / SIGINT


def test_sigterm_saves_at_the_end_of_the_iteration_and_exits_143(tmp_path, tiny_model_dir, prompts_file, ppo_baseline):
    run_dir = tmp_path / "run"
    gate_dir, spec = gate(tmp_path, "gate", 3)
    # save_every=100: the only checkpoint can come from the signal
    proc = Proc(tmp_path, *ppo_args(tiny_model_dir, prompts_file, "ppo.checkpoint.save_every=100"), "-o", run_dir,
                **{GATE_ENV: spec})
    proc.wait_for(lambda: (gate_dir / "reached").exists())  # inside iteration 3
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for(lambda: "SIGTERM received" in proc.output)  # handled while the reward callable is parked
    (gate_dir / "release").write_text("")
    assert proc.proc.wait(timeout=60) == 143, proc.output
    out = proc.output
    assert "SIGTERM" in out and f"--resume {run_dir}" in " ".join(out.split()), out
    assert "Traceback" not in out
    ckpts = run_dir / "ppo" / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000003"]  # iteration 3 finished, then saved
    assert [m["step"] for m in read_metrics(run_dir / "ppo" / "metrics.jsonl") if "objective/kl" in m] == [1, 2, 3]

    result = cli("ppo", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert_same_run(ppo_baseline, run_dir / "ppo", "policy")


def test_sigint_in_process_exits_130_and_resumes(tmp_path, tiny_model_dir, prompts_file, ppo_baseline, monkeypatch):
    run_dir = tmp_path / "run"
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    monkeypatch.setenv(GATE_ENV, "SIGINT:2")
    result = cli(*ppo_args(tiny_model_dir, prompts_file, "ppo.checkpoint.save_every=100"), "-o", run_dir)
    assert result.exit_code == 130, result.output
    assert "SIGINT" in result.output and "--resume" in result.output
    assert [p.name for p in list_checkpoints(run_dir / "ppo" / "checkpoints")] == ["step-00000002"]
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers  # restored

    monkeypatch.delenv(GATE_ENV)
    result = cli("ppo", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert_same_run(ppo_baseline, run_dir / "ppo", "policy")


def test_lora_policy_and_critic_resume_to_the_uninterrupted_run(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    """ppo.lora and ppo.value_lora: the adapters and the critic's head come back from the checkpoint
    (peft-wrapped state dicts) and the resumed run ends where the uninterrupted one does."""
    pytest.importorskip("peft")
    lora = ("ppo.lora.r=4", "ppo.value_lora.r=4")
    whole = cli(*ppo_args(tiny_model_dir, prompts_file, *lora), "-o", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    import test_resume

    test_resume._calls = 0
    monkeypatch.setenv(GATE_ENV, "SIGINT:3")
    stopped = cli(*ppo_args(tiny_model_dir, prompts_file, *lora), "-o", tmp_path / "run")
    assert stopped.exit_code == 130, stopped.output
    monkeypatch.delenv(GATE_ENV)
    resumed = cli("ppo", "--resume", tmp_path / "run")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in " ".join(resumed.output.split())
    assert_same_run(tmp_path / "whole" / "ppo", tmp_path / "run" / "ppo", "policy")
    assert weights(tmp_path / "whole" / "ppo" / "value_model").keys() == weights(tmp_path / "run" / "ppo" / "value_model").keys()
    for name, tensor in weights(tmp_path / "whole" / "ppo" / "value_model").items():
        assert torch.equal(tensor, weights(tmp_path / "run" / "ppo" / "value_model")[name]), name


# ------------------------------------------------------------------ NaN / Inf


def test_a_nan_update_is_skipped_and_reported(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "loss@2;rewards@4")
    run_dir = tmp_path / "run"
    result = cli(*ppo_args(tiny_model_dir, prompts_file, "ppo.checkpoint.keep_when_finished=true"), "-o", run_dir)
    assert result.exit_code == 0, result.output
    assert "loss is nan at iteration 2: update skipped" in " ".join(result.output.split())
    lines = read_metrics(run_dir / "ppo" / "metrics.jsonl")
    faults = [{k: m[k] for k in ("fault", "tensor", "step")} for m in lines if "fault" in m]
    assert faults == [{"fault": "nan", "tensor": "loss", "step": 2}, {"fault": "nan", "tensor": "rewards", "step": 4}]
    assert [m["step"] for m in lines if "objective/kl" in m] == [1, 3, 5, 6]  # no metrics line for a skipped update
    # Skipped = no optimiser step at all: 4 good iterations × 2 epochs × 2 mini-batches.
    final = latest_checkpoint(run_dir / "ppo" / "checkpoints")
    optimizer = torch.load(final / OPTIMIZER_FILE, weights_only=True)
    assert int(optimizer["state"][0]["step"]) == 4 * 2 * 2


def test_consecutive_nans_stop_the_run_with_a_diagnostic(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "values@3,4,5")
    run_dir = tmp_path / "run"
    result = cli(*ppo_args(tiny_model_dir, prompts_file, "ppo.checkpoint.save_every=1"), "-o", run_dir)
    assert result.exit_code == 3, result.output
    message = " ".join(result.output.split())
    assert "3 consecutive updates skipped" in message and "iteration 5 (values is nan)" in message
    assert "Traceback" not in result.output
    # The last good checkpoint (after iteration 2) is intact and is what a resume would load.
    ckpts = run_dir / "ppo" / "checkpoints"
    assert latest_checkpoint(ckpts).name == "step-00000002" and is_complete(ckpts / "step-00000002")
    assert not list(ckpts.glob("*.tmp-*")) and not (run_dir / "ppo" / "done.json").exists()


def test_sft_nan_loss_voids_the_optimiser_step(tmp_path, tiny_model_dir, sft_file, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "loss@3")
    run_dir = tmp_path / "run"
    result = cli(*sft_args(tiny_model_dir, sft_file, "sft.checkpoint.keep_when_finished=true"), "-o", run_dir)
    assert result.exit_code == 0, result.output
    lines = read_metrics(run_dir / "sft" / "metrics.jsonl")
    assert [(m["tensor"], m["step"]) for m in lines if "fault" in m] == [("loss", 3)]
    optimizer = torch.load(latest_checkpoint(run_dir / "sft" / "checkpoints") / OPTIMIZER_FILE, weights_only=True)
    steps = max(m["step"] for m in lines)
    assert int(optimizer["state"][0]["step"]) == steps - 1


# ------------------------------------------------------------------ bad input and protection of runs


def test_a_raising_reward_callable_is_one_line_naming_it_and_the_batch(tmp_path, tiny_model_dir, prompts_file):
    result = cli(*ppo_args(tiny_model_dir, prompts_file, callable_="test_resume:raising_reward"), "-o", tmp_path / "run")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "reward callable test_resume:raising_reward raised ZeroDivisionError" in text
    assert "batch of 8" in text and "first prompt" in text
    assert "Traceback" not in result.output


@pytest.mark.parametrize("callable_, needle", [
    ("no_such_module_xyz:f", "ppo.reward.callable: cannot import module 'no_such_module_xyz'"),
    ("test_resume:no_such_fn", "has no callable 'no_such_fn'"),
])
def test_an_unusable_reward_callable_fails_before_training(tmp_path, tiny_model_dir, prompts_file, callable_, needle):
    run_dir = tmp_path / "run"
    result = cli(*ppo_args(tiny_model_dir, prompts_file, callable_=callable_), "-o", run_dir)
    assert result.exit_code == 2 and needle in " ".join(result.output.split())
    assert not (run_dir / "ppo" / "metrics.jsonl").exists()


def test_bad_prompts_line_and_bad_policy_path_at_the_cli(tmp_path, tiny_model_dir, prompts_file):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"promt": "typo"}\n')
    result = cli(*ppo_args(tiny_model_dir, bad), "-o", tmp_path / "a")
    assert result.exit_code == 2 and "prompts.jsonl:2" in result.output
    result = cli(*ppo_args(tmp_path / "no_model", prompts_file), "-o", tmp_path / "b")
    assert result.exit_code == 2 and "ppo.policy.name_or_path" in result.output


def test_resume_refuses_what_it_cannot_honour(tmp_path, tiny_model_dir, prompts_file, ppo_baseline):
    run_dir = ppo_baseline.parent
    result = cli("ppo", "--resume", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such run directory" in result.output
    result = cli("ppo", "--resume", run_dir, "--config", tmp_path / "x.yaml")
    assert result.exit_code == 2 and "cannot be combined with --config" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("sft", "--resume", tmp_path / "empty")
    assert result.exit_code == 2 and "not an rlhfkit run directory" in result.output


def test_a_checkpoint_is_only_resumed_with_its_config(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    monkeypatch.setenv(GATE_ENV, "SIGINT:2")
    run_dir = tmp_path / "run"
    assert cli(*ppo_args(tiny_model_dir, prompts_file), "-o", run_dir).exit_code == 130
    monkeypatch.delenv(GATE_ENV)
    result = cli("ppo", "--resume", run_dir, "--set", "ppo.learning_rate=1e-4")
    assert result.exit_code == 2
    assert "ppo.learning_rate=0.003" in result.output and "0.0001" in result.output
    # logging and checkpoint settings may change
    result = cli("ppo", "--resume", run_dir, "--set", "ppo.checkpoint.keep_last=1", "--set", "ppo.logging.log_every=2")
    assert result.exit_code == 0, result.output


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_model_dir, prompts_file, ppo_baseline):
    before = weights(ppo_baseline / "policy")
    result = cli(*ppo_args(tiny_model_dir, prompts_file), "-o", ppo_baseline.parent)
    assert result.exit_code == 2 and "--overwrite" in result.output and "--resume" in result.output
    after = weights(ppo_baseline / "policy")
    assert all(torch.equal(before[k], after[k]) for k in before)
    result = cli("run", "--resume", ppo_baseline.parent, "--overwrite")
    assert result.exit_code == 2 and "cannot be combined with --overwrite" in result.output


# ------------------------------------------------------------------ the whole pipeline


def test_run_resume_skips_finished_stages(tmp_path, tiny_model_dir, monkeypatch):
    """`rlhfkit run` stopped inside PPO (here by NaN faults) resumes without redoing SFT and RM."""
    root = HERE.parents[1]
    out = tmp_path / "run"
    args = ["run", "--config", root / "configs/example.yaml", "-o", out]
    for s in [f"sft.model.name_or_path={tiny_model_dir}", f"sft.data.path={root / 'examples/data/sft.jsonl'}",
              f"rm.data.path={root / 'examples/data/preferences.jsonl'}", f"ppo.data.path={root / 'examples/data/prompts.jsonl'}",
              "device=cpu", "sft.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}",
              "rm.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}", "ppo.num_iterations=3", "ppo.batch_size=8",
              "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.generation.max_new_tokens=8",
              "ppo.checkpoint.save_every=1", "ppo.checkpoint.max_consecutive_faults=2", "eval.num_prompts=4",
              "sft.logging.progress=false", "rm.logging.progress=false", "ppo.logging.progress=false"]:
        args += ["--set", s]
    monkeypatch.setenv(INJECT_ENV, "loss@2,3")
    first = cli(*args)
    assert first.exit_code == 3, first.output
    assert (out / "sft" / "done.json").exists() and (out / "rm" / "done.json").exists()
    assert not (out / "ppo" / "done.json").exists() and not (out / "summary.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "sft" / "model" / "model.safetensors", out / "rm" / "model" / "model.safetensors")}

    monkeypatch.delenv(INJECT_ENV)  # "fixed"
    result = cli("run", "--resume", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "[sft] finished before" in text and "[rm] finished before" in text
    assert "[ppo] resuming from" in text and "step-00000001" in text
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # not retrained
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "rm", "ppo"}
    assert summary["stages"]["sft"] == json.loads((out / "sft" / "done.json").read_text())["metrics"]
    assert str(out / "rm" / "model") in (out / "config.yaml").read_text()  # resolved paths recovered
    assert (out / "report.html").exists()
    ppo_steps = [m["step"] for m in read_metrics(out / "ppo" / "metrics.jsonl") if "objective/kl" in m]
    assert ppo_steps == [1, 2, 3]
