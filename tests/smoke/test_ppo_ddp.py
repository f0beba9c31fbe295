"""PPO in two processes on CPU (gloo), as a user launches it.

- update invariance: one PPO update on one fixed batch gives the same policy and critic with
  1 process × 64 episodes, 2 processes × 32, and 1 process × 8 accumulated micro-batches of 8
  (responses of different lengths, so a per-micro-batch token mean would fail it);
- advantages whitened across two processes equal the whitening of the whole batch;
- one update under FSDP2 (configs/accelerate/fsdp.yaml on CPU processes), DeepSpeed ZeRO-2 and ZeRO-3
  (zero2.yaml, zero3.yaml on DeepSpeed's CPU accelerator) equals the single process's;
- `rlhfkit run --quick` under `accelerate launch --multi_gpu --num_processes 2`: one metrics line
  per iteration, one policy, a report, held-out evaluation points (`ppo.eval.every`) from both
  processes' shares; SIGKILL of both processes mid-PPO, then `--resume` under the same launcher, ends
  with the same metrics (evaluation points included) as the uninterrupted two-process run;
- the same run and the same kill-and-resume under FSDP2 (checkpoints gather the shards) and under
  DeepSpeed ZeRO-2 and ZeRO-3 (ZeRO-3's weights gathered, each process's optimizer partition kept).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.training.distributed import FSDP_ON_CPU_ENV

from .test_ppo import _iterations

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
CONFIGS = HERE.parents[1] / "configs" / "accelerate"
FSDP_CONFIG = CONFIGS / "fsdp.yaml"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200", **extra}


def _update(model_dir: Path, out: Path, processes: int, mini: int, accumulation: int = 1,
            engine: str | None = None, tokens: int | None = None) -> tuple[dict, dict]:
    """engine: None (DDP, or one process), or a launch config in configs/accelerate (fsdp: FSDP2 on CPU
    processes, training/distributed.py::fsdp_on_cpu; zero2 / zero3: DeepSpeed on its CPU accelerator)."""
    worker = [str(HERE / "ppo_update_worker.py"), str(model_dir), str(out), "--mini", str(mini),
              "--accumulation", str(accumulation), *(["--tokens", str(tokens)] if tokens else [])]
    if engine is not None:
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(CONFIGS / f"{engine}.yaml"),
               "--num_processes", str(processes), "--main_process_port", str(_free_port()), *worker]
    elif processes == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", str(_free_port()), *worker]
    done = subprocess.run(cmd, env=_env(**({FSDP_ON_CPU_ENV: "1"} if engine == "fsdp" else {})), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_file(str(out)), json.loads(Path(str(out) + ".json").read_text())


def test_one_update_is_the_same_for_any_split_of_the_batch(tmp_path, tiny_model_dir):
    single, info1 = _update(tiny_model_dir, tmp_path / "one.safetensors", 1, mini=64)
    ddp, info2 = _update(tiny_model_dir, tmp_path / "two.safetensors", 2, mini=32)
    accumulated, info3 = _update(tiny_model_dir, tmp_path / "acc.safetensors", 1, mini=8, accumulation=8)
    assert info2["world"] == 2 and info1["world"] == info3["world"] == 1
    assert info1["fault"] is info2["fault"] is info3["fault"] is None
    initial = {k: v for k, v in load_file(str(next(Path(tiny_model_dir).glob("*.safetensors")))).items()}
    moved = max((single[f"policy.{k}"] - v).abs().max().item() for k, v in initial.items() if f"policy.{k}" in single)
    assert moved > 1e-3  # the update did change the policy
    for name, tensor in single.items():
        torch.testing.assert_close(ddp[name], tensor, atol=2e-6, rtol=1e-5, msg=f"2 processes × 32: {name}")
        torch.testing.assert_close(accumulated[name], tensor, atol=2e-6, rtol=1e-5, msg=f"8 × 8 accumulated: {name}")
    # the logged statistics are global too
    for key in ("loss/policy_avg", "policy/clipfrac_avg", "val/ratio"):
        assert info2["stats"][key] == pytest.approx(info1["stats"][key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("engine, kind", [("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_one_update_under_a_sharding_engine_equals_one_process(tmp_path, tiny_model_dir, engine, kind):
    """FSDP2 and ZeRO-3 shard policy and critic over the two processes, ZeRO-2 their optimizer state
    and gradients (reduce-scatter, gathered weights for the result): the update is the single
    process's. (Plain SGD, one step: DeepSpeed's engine steps and averages like DDP.)"""
    if engine != "fsdp":
        pytest.importorskip("deepspeed", reason="DeepSpeed is installed by `make test`")
    single, _ = _update(tiny_model_dir, tmp_path / "one.safetensors", 1, mini=64)
    sharded, info = _update(tiny_model_dir, tmp_path / f"{engine}.safetensors", 2, mini=32, engine=engine)
    assert info["world"] == 2 and info["distributed_type"] == kind and info["fault"] is None
    assert sharded.keys() == single.keys()
    for name, tensor in single.items():
        torch.testing.assert_close(sharded[name], tensor, atol=2e-6, rtol=1e-5, msg=f"{engine}, 2 processes × 32: {name}")


def test_a_token_budget_takes_the_same_step_in_one_and_two_processes(tmp_path, tiny_model_dir):
    """ppo.micro_batch_tokens: each process cuts its 32 rows into length-sorted, cropped micro-batches
    of ≤ 40 tokens — a different number on each process (all but the last under no_sync) — and the
    step equals the padded single-process one."""
    single, info1 = _update(tiny_model_dir, tmp_path / "one.safetensors", 1, mini=64)
    budget, info2 = _update(tiny_model_dir, tmp_path / "two.safetensors", 2, mini=32, tokens=40)
    assert info1["fault"] is info2["fault"] is None
    counts = info2["micro_batches"]
    assert len(counts) == 2 and min(counts) > 1 and counts[0] != counts[1], counts  # the case that needs care
    for name, tensor in single.items():
        torch.testing.assert_close(budget[name], tensor, atol=2e-6, rtol=1e-5, msg=f"2 processes, token budget: {name}")
    for key in ("loss/policy_avg", "loss/value_avg", "policy/clipfrac_avg", "val/ratio"):
        assert info2["stats"][key] == pytest.approx(info1["stats"][key], rel=1e-5, abs=1e-6), key


def test_advantages_whitened_across_processes_equal_the_whole_batch(tmp_path, tiny_model_dir):
    _, info = _update(tiny_model_dir, tmp_path / "w.safetensors", 2, mini=32)
    assert info["whitening_error"] < 1e-5


# ---------------------------------------------------------------- the CLI under a launcher

# Held-out eval at 4 and 8; the RM's batches length-grouped (the default preset's loader, sharded per process).
QUICK = ["--set", "ppo.checkpoint.save_every=2", "--set", "ppo.eval.every=4", "--set", "rm.optim.group_by_length=true"]


DDP = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
FSDP = ["--config_file", str(FSDP_CONFIG), "--num_processes", "2"]  # with FSDP_ON_CPU_ENV=1 in the environment
ZERO2 = ["--config_file", str(CONFIGS / "zero2.yaml"), "--num_processes", "2"]  # DeepSpeed on its CPU accelerator
ZERO3 = ["--config_file", str(CONFIGS / "zero3.yaml"), "--num_processes", "2"]
LAUNCHES = {"ddp": DDP, "fsdp": FSDP, "zero2": ZERO2, "zero3": ZERO3}


def _launch(*args: str, port: int, launch: list[str] = DDP, **popen) -> subprocess.Popen:
    cmd = [str(BIN / "accelerate"), "launch", *launch, "--main_process_port", str(port), "-m", "rlhfkit.cli", *args]
    env = {**({FSDP_ON_CPU_ENV: "1"} if launch is FSDP else {}), **popen.pop("env", {})}
    return subprocess.Popen(cmd, env=_env(**env), stdout=popen.pop("stdout", subprocess.PIPE),
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _process(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _ppo_lines(run_dir: Path) -> list[dict]:
    """The per-iteration records of PPO's metrics.jsonl (the monitor's diagnostic lines share the file)."""
    return _iterations(run_dir / "ppo")


def _run(run_dir: Path, launch: list[str]) -> tuple[Path, str]:
    proc = _launch("run", "--quick", "-o", str(run_dir), *QUICK, port=_free_port(), launch=launch)
    out, _ = proc.communicate(timeout=900)
    (run_dir.parent / "launch.log").write_text(out)  # the whole output, for a failure's first error
    assert proc.returncode == 0, out[-4000:]
    return run_dir, out


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ddp") / "run", DDP)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("fsdp") / "run", FSDP)


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed by `make test`")
    return _run(tmp_path_factory.mktemp("zero3") / "run", ZERO3)


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory):
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed by `make test`")
    return _run(tmp_path_factory.mktemp("zero2") / "run", ZERO2)


def test_run_quick_under_two_processes(two_process_run):
    run_dir, out = two_process_run
    lines = _ppo_lines(run_dir)
    assert [line["step"] for line in lines] == list(range(1, 9))  # one line per iteration, not one per process
    for stage in ("sft", "rm"):  # SFT and RM: one writer too (a second one would repeat every line)
        keys = [(r["step"], tuple(sorted(r))) for r in map(json.loads, (run_dir / stage / "metrics.jsonl").read_text().splitlines())]
        assert len(keys) == len(set(keys)) > 0
    assert out.count("rlhfkit run: summary") == 1  # one process prints
    assert (run_dir / "ppo" / "policy" / "model.safetensors").exists() and (run_dir / "report.html").exists()
    assert "2 process(es) × 16" in out
    assert all(line["policy/first_minibatch_ratio_dev"] == 0.0 for line in lines)
    evaluated = [line for line in lines if "eval/kl" in line]  # every process evaluated, the main one wrote
    assert [line["step"] for line in evaluated] == [4, 8]
    assert all(line["eval/kl"] > 0 and -1 <= line["eval/gold_score"] <= 1 for line in evaluated), evaluated
    assert "plots/ppo_eval_scores.png" in (run_dir / "report.html").read_text()


@pytest.mark.parametrize("engine", ["fsdp", "zero2", "zero3"])
def test_run_quick_under_a_sharding_engine(engine, two_process_run, request):
    """FSDP2 over gloo, DeepSpeed ZeRO-2 / ZeRO-3 on its CPU accelerator: the same one-writer outputs
    as DDP, whole-weight models that load anywhere, and the same numbers as the DDP run up to float
    reduction order (until sampling diverges)."""
    run_dir, out = request.getfixturevalue(f"{engine}_run")
    assert out.count("rlhfkit run: summary") == 1 and (run_dir / "report.html").exists()
    assert [line["step"] for line in _ppo_lines(run_dir)] == list(range(1, 9))
    ddp_dir, _ = two_process_run
    for stage in ("sft", "rm"):
        got, want = (load_file(str(d / stage / "model" / "model.safetensors")) for d in (run_dir, ddp_dir))
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-3, msg=f"{stage}: {name}")
    first, first_ddp = _ppo_lines(run_dir)[0], _ppo_lines(ddp_dir)[0]
    for key in ("objective/scores", "objective/entropy", "value/mean"):  # the rollout, before any update
        assert first[key] == pytest.approx(first_ddp[key], rel=1e-4, abs=1e-6), key
    for key in ("loss/policy_avg", "loss/value_avg"):  # means over 4 epochs of updates: rounding compounds
        assert first[key] == pytest.approx(first_ddp[key], rel=2e-2), key
    policy = load_file(str(run_dir / "ppo" / "policy" / "model.safetensors"))
    assert all(not isinstance(t, torch.distributed.tensor.DTensor) for t in policy.values()) and len(policy) > 4


@pytest.mark.parametrize("launch", ["ddp", "fsdp", "zero2", "zero3"])
def test_sigkill_both_processes_then_resume_matches_the_uninterrupted_run(tmp_path, launch, request):
    reference_dir, _ = request.getfixturevalue("two_process_run" if launch == "ddp" else f"{launch}_run")
    launch_args = LAUNCHES[launch]
    run_dir = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w")
    # pause the main process while it writes the iteration-6 checkpoint (2 and 4 are complete; SFT and RM
    # save at their last steps, 12 and 4, in this two-process run)
    proc = _launch("run", "--quick", "-o", str(run_dir), *QUICK, port=_free_port(), launch=launch_args,
                   env={"RLHFKIT_CHECKPOINT_PAUSE": "6"}, stdout=log)
    deadline = time.monotonic() + 600
    while not list((run_dir / "ppo" / "checkpoints").glob("*.tmp-*/PAUSED")):
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the paused checkpoint"
        time.sleep(0.5)
    # the launcher and both ranks at once (torch's elastic agent starts each rank in a session of its own)
    everyone = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    for pid in everyone:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    psutil.wait_procs([p for p in map(_process, everyone) if p is not None], timeout=60)
    assert not (run_dir / "ppo" / "done.json").exists()

    resumed = _launch("run", "--resume", str(run_dir), port=_free_port(), launch=launch_args)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-4000:]
    assert "resuming from" in out
    got, want = _ppo_lines(run_dir), _ppo_lines(reference_dir)
    assert [line["step"] for line in got] == list(range(1, 9))
    def numbers(line: dict) -> dict:  # wall-clock fields aside (timing/eval is only on evaluated iterations)
        return {k: v for k, v in line.items() if k != "time" and not k.startswith(("timing/", "memory/"))}

    for a, b in zip(got, want):
        assert numbers(a) == numbers(b)


def test_bad_input_under_two_processes_is_one_line_from_one_process(tmp_path):
    """The main process finds the problem (a run directory in the way) and both ranks stop with it: one
    error line, no traceback, no rank left waiting in a collective."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("not rlhfkit's")
    proc = _launch("run", "--quick", "-o", str(taken), port=_free_port())
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert out.count("error:") == 1 and "already exists" in out, out[-3000:]
    ours = out.split("failed (exitcode")[0]  # after it: the launcher's own traceback and report
    assert "Traceback" not in ours and "error:" in ours
    # the bad-input code, never a crash's; the launcher may stop the second rank (SIGTERM) before it exits by itself
    codes = [line.split(":")[1].split()[0] for line in out.splitlines() if line.strip().startswith("exitcode")]
    assert "2" in codes and set(codes) <= {"2", "-15"}, codes
    assert (taken / "mine.txt").read_text() == "not rlhfkit's"
