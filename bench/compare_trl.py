"""rlhfkit's PPO against TRL 1.12's PPOTrainer, side by side on identical work (issue 15, item 1).

    OMP_NUM_THREADS=2 .venv/bin/python bench/compare_trl.py            # the issue's table, quiet machine
    OMP_NUM_THREADS=1 .venv/bin/python bench/compare_trl.py --quick --allow-noisy --threads 1   # development

What it does, in order:
  1. TRL's venv: created once under ~/.cache/rlhfkit/bench-trl-venv (`--trl-venv`) from the package
     registry with the pinned versions in TRL_PINS (TRL is not an rlhfkit dependency). TRL 1.12 is
     the last TRL with PPOTrainer (trl.experimental.ppo). Same transformers / accelerate / torch as
     rlhfkit's own venv, so the model code and kernels are the same on both sides.
  2. The shared models, built from configs (random init, nothing downloaded) and saved once as
     safetensors: a byte-level BPE tokenizer (4096 tokens, trained on the fortunes corpus that the
     bundled task ships), a GPT-2 policy (also the reference) and a GPT2ForSequenceClassification
     reward model, which is also both critics' initial weights. 64 prompts of exactly 16 tokens, so
     neither side pads a prompt. Both sides read these same files and ids.
  3. The matmul ceiling: the best of a few 2048² fp32 matmuls at the benchmark's thread count.
  4. Per config, `--repetitions` rounds, interleaved A/B (ABBA order), each run its own process:
     `--warmup` + `--iterations` PPO iterations of 64 prompts x exactly `response_length` tokens,
     4 PPO epochs of one 64-episode mini-batch (one optimiser step per epoch), fp32, T = 0.7,
     fixed β = 0.05 (k1), γ = 1, λ = 0.95, clip 0.2 / 0.2, vf_coef 0.1, constant LR, no grad clip.
     The outside CPU load is measured around every run (/proc/stat busy time minus the run's own
     CPU time, per wall second); a run with more than `--max-outside-load` busy cores of other work
     makes the report refuse (exit 3) unless `--allow-noisy`.
  5. A table: s/iter (median over rounds of each run's mean over measured iterations), split
     into generation / experience / update, peak RSS of each process, FLOPs per iteration and the
     fraction of the ceiling, the ratio TRL/rlhfkit; last line: a JSON list with one object per
     config.
  6. The learning check, per config: one more, untimed run per side of `--learning-iterations`
     (10) iterations; it passes when both sides' mean RM score over the last 3 iterations is above
     that over the first 3 (4 iterations are too few: TRL's score, noisier here, rose from 1.1 to
     2.6 over 10 iterations but fell over the first 5 in a development run).

Response length: TRL runs with `stop_token=None` (EOS is an ordinary token, every response is
`response_length` tokens); rlhfkit suppresses EOS for the whole response (bench-only, see
compare_trl_rlhfkit.py). How each side's phases are timed: compare_trl_trl.py and
compare_trl_rlhfkit.py docstrings. FLOPs: bench/compare_trl_flops.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compare_trl_flops import ModelShape, iteration_flops
from compare_trl_work import build_work, measure_ceiling, run_measured

HERE = Path(__file__).resolve().parent
TRL_PINS = ["torch==2.13.0", "trl==1.12.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0"]
TABLE = [(2, 128, 32), (4, 256, 32), (6, 512, 32), (2, 128, 128)]  # (layers, width, response tokens): the rows
BATCH, PPO_EPOCHS, PROMPT_TOKENS = 64, 4, 16


@dataclass(frozen=True)
class Config:
    layers: int
    width: int
    response_length: int

    @property
    def name(self) -> str:
        return f"{self.layers}L-d{self.width}-r{self.response_length}"


# ---------------------------------------------------------------------------------------------- TRL venv


def ensure_trl_venv(venv: Path) -> Path:
    """The TRL venv's python, creating the venv (once per set of pins) if needed."""
    python, stamp = venv / "bin" / "python", venv / ".rlhfkit-bench-pins"
    if stamp.exists() and stamp.read_text() == "\n".join(TRL_PINS):
        return python
    print(f"creating TRL's venv at {venv} ({' '.join(TRL_PINS)}); a few minutes, once", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    # torch first, alone: the pinned CPU build (from local disk here), so the rest cannot pull a CUDA torch
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", TRL_PINS[0]], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *TRL_PINS], check=True)
    stamp.write_text("\n".join(TRL_PINS))
    return python


# ---------------------------------------------------------------------------------------------- the runs


def run_config(cfg: Config, args, trl_python: Path, ceiling: float) -> dict:
    work = build_work(args.work_dir, cfg.layers, cfg.width, cfg.response_length, BATCH, PROMPT_TOKENS)
    work.update(threads=args.threads, iterations=args.warmup + args.iterations, batch_size=BATCH,
                ppo_epochs=PPO_EPOCHS, temperature=0.7, learning_rate=args.learning_rate, kl_coef=0.05, seed=0)
    work_file = args.work_dir / f"work-{cfg.name}.json"
    work_file.write_text(json.dumps(work))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}
    sides = {"rlhfkit": [sys.executable, str(HERE / "compare_trl_rlhfkit.py"), str(work_file)],
             "trl": [str(trl_python), str(HERE / "compare_trl_trl.py"), str(work_file)]}
    runs: dict[str, list[dict]] = {"rlhfkit": [], "trl": []}
    for rep in range(args.repetitions):
        for side in (("rlhfkit", "trl") if rep % 2 == 0 else ("trl", "rlhfkit")):  # ABBA: drift hits both
            load_before = Path("/proc/loadavg").read_text().split()[0]
            result, outside = run_measured(sides[side], env, args.work_dir / f"last-{side}.log")
            result.update(outside_load=outside, loadavg_before=float(load_before))
            runs[side].append(result)
            measured = result["iterations"][args.warmup:]
            print(f"  {cfg.name} round {rep + 1} {side:<7}: {statistics.fmean(i['total'] for i in measured):7.2f} s/iter, "
                  f"outside load {outside:.2f} cores, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    shape = ModelShape(cfg.layers, cfg.width, work["vocab_size"])
    out = summarise(cfg, runs, args.warmup, iteration_flops(shape, BATCH, PROMPT_TOKENS, cfg.response_length, PPO_EPOCHS), ceiling)
    if args.learning_iterations:
        learning_file = args.work_dir / f"work-{cfg.name}-learning.json"
        learning_file.write_text(json.dumps({**work, "iterations": args.learning_iterations}))
        for side, cmd in sides.items():
            result, _ = run_measured([*cmd[:-1], str(learning_file)], env, args.work_dir / f"last-{side}-learning.log")
            scores = result["scores"]
            gain = statistics.fmean(scores[-3:]) - statistics.fmean(scores[:3])
            out[side].update(learning_scores=scores, learning_gain=gain, learning_ok=gain > 0)
            print(f"  {cfg.name} learning {side:<7}: mean RM score, first 3 -> last 3 of {len(scores)} iterations: "
                  f"{statistics.fmean(scores[:3]):.3f} -> {statistics.fmean(scores[-3:]):.3f}", flush=True)
    return out


def summarise(cfg: Config, runs: dict[str, list[dict]], warmup: int, flops: dict, ceiling: float) -> dict:
    out = {"config": cfg.name}
    for side, side_runs in runs.items():
        phases = {}
        for phase in ("generation", "experience", "update", "total"):
            phases[phase] = statistics.median(statistics.fmean(i[phase] for i in r["iterations"][warmup:]) for r in side_runs)
        out[side] = {
            **{f"{p}_s": v for p, v in phases.items()},
            "peak_rss_mb": max(r["peak_rss_mb"] for r in side_runs),
            "flops_per_iter": flops[side]["total"],
            "update_fraction_of_ceiling": flops[side]["update"] / phases["update"] / ceiling,
            "iteration_fraction_of_ceiling": flops[side]["total"] / phases["total"] / ceiling,
            "learning_ok": None,  # set by the learning runs (None: --learning-iterations 0)
            "outside_load_max": max(r["outside_load"] for r in side_runs),
        }
    return out


def print_report(results: list[dict], ceiling: float, args) -> None:
    print(f"\nrlhfkit vs TRL 1.12 PPOTrainer: {BATCH} prompts x exactly R tokens, {PPO_EPOCHS} PPO epochs x 1 mini-batch, "
          f"fp32, {args.threads} thread(s); {args.warmup} warm-up + {args.iterations} measured iterations, "
          f"{args.repetitions} interleaved round(s), medians; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s")
    head = (f"{'config':<14} {'side':<8} {'s/iter':>7} {'gen':>6} {'exp':>6} {'update':>7} {'RSS MB':>7} "
            f"{'GFLOP/it':>9} {'upd %ceil':>9} {'it %ceil':>8} {'learn gain':>11} {'TRL/rlhfkit':>11}")
    print(head + "\n" + "-" * len(head))
    for r in results:
        for side in ("trl", "rlhfkit"):
            s = r[side]
            ratio = f"{r['ratio']:.2f}x" if side == "rlhfkit" else ""
            learn = f"{s['learning_gain']:+.3f}" if "learning_gain" in s else "not run"
            print(f"{r['config']:<14} {side:<8} {s['total_s']:7.2f} {s['generation_s']:6.2f} {s['experience_s']:6.2f} "
                  f"{s['update_s']:7.2f} {s['peak_rss_mb']:7.0f} {s['flops_per_iter'] / 1e9:9.1f} "
                  f"{100 * s['update_fraction_of_ceiling']:8.0f}% {100 * s['iteration_fraction_of_ceiling']:7.0f}% "
                  f"{learn:>11} {ratio:>11}")
    print("(gen / exp / update: s per iteration; GFLOP/it: the work each side does — TRL takes its old logprobs from "
          "generate's logits, rlhfkit recomputes them with a policy forward; learn gain: mean RM score over the last 3 "
          "minus the first 3 iterations of the learning run)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", help="comma list of LAYERSxWIDTH (e.g. 2x128,6x512); with --response-lengths, the cross product "
                                   "(default: the issue's four rows)")
    p.add_argument("--response-lengths", default="32", help="comma list, used with --sizes (default 32)")
    p.add_argument("--quick", action="store_true",
                   help="2L d128, 32 tokens, 1 round of 1 + 2 iterations (and the learning runs): checks the plumbing")
    p.add_argument("--repetitions", type=int, default=3, help="interleaved rounds per config (default 3)")
    p.add_argument("--iterations", type=int, default=3, help="measured iterations per run (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="iterations per run before the measured ones (default 1)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                   help="torch threads on both sides and for the ceiling (default: $OMP_NUM_THREADS, else 2)")
    p.add_argument("--learning-rate", type=float, default=3e-4, help="both sides (default 3e-4)")
    p.add_argument("--learning-iterations", type=int, default=10,
                   help="iterations of the untimed learning-check run per side and config (default 10; 0: no check)")
    p.add_argument("--max-outside-load", type=float, default=0.15,
                   help="busy cores of other work allowed during a run before the report is refused (default 0.15)")
    p.add_argument("--allow-noisy", action="store_true", help="report a noisy run anyway, marked as such (development)")
    p.add_argument("--trl-venv", type=Path, default=Path.home() / ".cache" / "rlhfkit" / "bench-trl-venv")
    p.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "rlhfkit" / "bench-compare-trl",
                   help="shared models, prompts and work files (rebuilt deterministically when missing)")
    p.add_argument("--json", type=Path, help="also write the full results here")
    args = p.parse_args(argv)
    if 0 < args.learning_iterations < 6:
        p.error("--learning-iterations: 0 (no check) or at least 6 (the first 3 and the last 3 are compared)")
    if args.quick:
        args.repetitions, args.iterations, args.warmup = 1, 2, 1
        configs = [Config(2, 128, 32)]
    elif args.sizes:
        sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
        configs = [Config(layers, width, int(r)) for layers, width in sizes for r in args.response_lengths.split(",")]
    else:
        configs = [Config(*row) for row in TABLE]
    return args, configs


def main(argv: list[str] | None = None) -> int:
    args, configs = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    trl_python = ensure_trl_venv(args.trl_venv)
    ceiling, ceiling_outside = measure_ceiling(args.threads, args.work_dir / "last-ceiling.log")
    print(f"matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s at {args.threads} thread(s) (outside load {ceiling_outside:.2f} cores)")
    results = []
    for cfg in configs:
        r = run_config(cfg, args, trl_python, ceiling)
        r["ratio"] = r["trl"]["total_s"] / r["rlhfkit"]["total_s"]
        results.append(r)
    print_report(results, ceiling, args)
    noisy = [f"{r['config']} {side}: {r[side]['outside_load_max']:.2f} busy cores of other work"
             for r in results for side in ("trl", "rlhfkit") if r[side]["outside_load_max"] > args.max_outside_load]
    if ceiling_outside > args.max_outside_load:
        noisy.append(f"matmul ceiling: {ceiling_outside:.2f} busy cores of other work")
    if args.json:
        args.json.write_text(json.dumps({"ceiling_flops": ceiling, "threads": args.threads, "results": results}, indent=2))
    if noisy and not args.allow_noisy:
        print("refusing to report: the CPU was shared during the measurement (limit "
              f"{args.max_outside_load} cores, --max-outside-load):\n  " + "\n  ".join(noisy), file=sys.stderr)
        return 3
    if noisy:
        print("NOISY (--allow-noisy): " + "; ".join(noisy))
    print(json.dumps([{"config": r["config"], "rlhfkit_s_per_iter": round(r["rlhfkit"]["total_s"], 4),
                       "trl_s_per_iter": round(r["trl"]["total_s"], 4), "ratio": round(r["ratio"], 4),
                       "rlhfkit_rss_mb": round(r["rlhfkit"]["peak_rss_mb"]), "trl_rss_mb": round(r["trl"]["peak_rss_mb"]),
                       "learning_ok": (None if r["rlhfkit"]["learning_ok"] is None
                                       else r["rlhfkit"]["learning_ok"] and r["trl"]["learning_ok"]),
                       **({"noisy": True} if noisy else {})} for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
