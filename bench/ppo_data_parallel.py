"""PPO of the default preset in 1 process vs 2 data-parallel processes (gloo) on this machine.

What runs: `rlhfkit ppo` with the default preset's PPO section (64 episodes per iteration,
mini-batch 16, 4 PPO epochs, 24 new tokens, T = 0.7) on the default task's base model (built and
cached by the fortunes task: GPT-2, 4 layers, d = 128), an RM with the same trunk and an untrained
head (timing does not depend on what the RM learned), and the task's PPO prompts.
  A: `rlhfkit ppo …`                                      one process, OMP_NUM_THREADS = threads
  B: `accelerate launch --multi_gpu --num_processes 2 …`  two processes, OMP_NUM_THREADS = threads / 2
The two alternate (A B A B …) so drift in the machine's speed hits both alike. Per run, the
per-iteration time (generation + scoring/experience + update) comes from metrics.jsonl with the
first iteration left out; `memory/peak_rss_mb` is the largest resident set of any process; and
`timing/collectives` is the time in rlhfkit's own all-reduces (whitening, statistics, verdicts) —
DDP's gradient all-reduce runs inside backward and is counted in the update, not there.

    .venv/bin/python bench/ppo_data_parallel.py                 # 2 pairs, 5 iterations each
    .venv/bin/python bench/ppo_data_parallel.py --pairs 3 --iterations 6 --threads 2

Run it on a quiet machine: other processes on the same cores slow torch 5–15×. Its last line is
one JSON object with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def prepare(root: Path) -> tuple[Path, Path, Path]:
    """The default task's base model and PPO prompts, and an RM with the same trunk."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.config.stages import TaskSection
    from rlhfkit.tasks.fortunes.task import FortunesTask

    prepared = FortunesTask(TaskSection(), root / "task", seed=42).prepare()
    tokenizer = AutoTokenizer.from_pretrained(prepared.base_model)
    rm = AutoModelForSequenceClassification.from_pretrained(prepared.base_model, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    return prepared.base_model, root / "rm", prepared.ppo_prompts_path


def write_config(root: Path, policy: Path, rm: Path, prompts: Path, iterations: int) -> Path:
    from rlhfkit.config.load import default_config_path

    preset = yaml.safe_load(default_config_path("default").read_text())
    ppo = preset["ppo"]
    ppo.update(num_iterations=iterations, policy={"name_or_path": str(policy)}, data={"path": str(prompts)},
               checkpoint={"save_every": 1000}, logging={"progress": False, "log_every": 1})
    ppo["reward"] = {**ppo.get("reward", {}), "model_paths": [str(rm)]}
    path = root / "ppo.yaml"
    path.write_text(yaml.safe_dump({"seed": 42, "stages": ["ppo"], "ppo": ppo}))
    return path


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_once(config: Path, out: Path, processes: int, threads: int) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    args = ["ppo", "--config", str(config), "-o", str(out)]
    if processes == 1:
        cmd = [str(BIN / "rlhfkit"), *args]
    else:
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()),
               "-m", "rlhfkit.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        shown = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if line.strip())
        raise SystemExit(f"{' '.join(cmd)} failed:\n{shown[-6000:]}")
    lines = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in lines if "timing/training" in line][1:]  # the first iteration warms up
    per_iter = [line["timing/generation"] + line["timing/scoring"] + line["timing/training"] for line in lines]
    return {
        "s_per_iter": statistics.median(per_iter),
        "generation": statistics.median(line["timing/generation"] for line in lines),
        "experience": statistics.median(line["timing/scoring"] for line in lines),
        "update": statistics.median(line["timing/training"] for line in lines),
        "collectives_fraction": statistics.median(line["timing/collectives"] / t for line, t in zip(lines, per_iter)),
        "peak_rss_mb": max(line["memory/peak_rss_mb"] for line in lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs (each: one 1-process and one 2-process run)")
    parser.add_argument("--iterations", type=int, default=5, help="PPO iterations per run (the first is not counted)")
    parser.add_argument("--threads", type=int, default=2, help="cores to use: 1 process × N threads vs 2 × N/2")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rlhfkit-dp-bench-"))
    try:
        config = write_config(root, *prepare(root), iterations=args.iterations)
        results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for pair in range(args.pairs):
            for processes in (1, 2):
                results[processes].append(run_once(config, root / f"run-{processes}", processes, args.threads))
                print(f"pair {pair + 1}, {processes} process(es): " + ", ".join(
                    f"{k} {v:.3g}" for k, v in results[processes][-1].items()), flush=True)
        ratios = [a["s_per_iter"] / b["s_per_iter"] for a, b in zip(results[1], results[2])]
        summary = {"threads": args.threads, "iterations": args.iterations, "pairs": args.pairs}
        for processes, runs in results.items():
            for key in runs[0]:
                summary[f"p{processes}_{key}"] = round(statistics.median(r[key] for r in runs), 4)
        summary["speedup_2_over_1"] = round(statistics.median(ratios), 3)
        print(f"\n1 process: {summary['p1_s_per_iter']:.2f} s/iter, 2 processes: {summary['p2_s_per_iter']:.2f} s/iter "
              f"(1-process time / 2-process time, per pair: {', '.join(f'{r:.2f}' for r in ratios)})")
        print(json.dumps(summary))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
