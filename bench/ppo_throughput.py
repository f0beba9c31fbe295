"""PPO throughput on a fixed tiny config: samples/s, generated tokens/s, time split, peak RSS.

Config (fixed): 64 prompts x up to 32 new tokens per iteration (ppo.batch_size 64,
mini_batch_size 8, gradient_accumulation_steps 8 -> 1 optimiser step per PPO epoch, 4 epochs),
temperature 0.7, a random-init GPT-2 (4 layers, d=256, 4 heads, ~3.3M parameters) built with
`rlhfkit.models.tiny.build_tiny_model` and the byte-level BPE from `build_tiny_tokenizer`.

Two reward variants, each in its own subprocess (so peak RSS is per variant):
  callable  a cheap Python function (counts a character): measures the PPO machinery alone;
  rm        a reward-model checkpoint (GPT2ForSequenceClassification of the same size): scoring
            is a real forward pass, and the critic is initialised from it (the PPO default).

Timing comes from the metrics rlhfkit logs per iteration:
  timing/generation  sampling with HF generate (stop at EOS);
  timing/scoring     policy + reference + critic forward passes over the rollout, reward source,
                     KL/rewards/GAE/whitening;
  timing/training    the PPO update (ppo_epochs passes of forward + backward + optimiser steps).
The first `--warmup` iterations are not counted. Tokens/s counts valid response tokens only
(up to and including EOS), so a run whose responses stop early is not flattered;
`--min-new-tokens 32` forces full-length responses by suppressing EOS in the sampler (benchmark
only: the sampler then differs from the learner's distribution on the EOS logit).

    .venv/bin/python bench/ppo_throughput.py                      # both variants, 3 iterations
    .venv/bin/python bench/ppo_throughput.py --iterations 5 --threads 2 --variants rm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, MINI_BATCH, ACCUMULATION, NEW_TOKENS = 64, 8, 8, 32
MODEL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 128}


def count_e(prompts: list[str], responses: list[str]) -> list[float]:
    """The cheap callable reward (importable as `ppo_throughput:count_e`)."""
    return [float(r.count("e")) for r in responses]


def _prompts(path: Path, n: int = 256) -> Path:
    from rlhfkit.models.tiny import SAMPLE_TEXT

    words = " ".join(SAMPLE_TEXT).split()
    lines = []
    for i in range(n):
        k = 2 + i % 6  # prompts of 2..7 words, so left padding is exercised
        start = (i * 5) % (len(words) - k)
        lines.append(json.dumps({"prompt": " ".join(words[start : start + k])}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _build(work: Path, variant: str):
    import torch
    from transformers import GPT2ForSequenceClassification

    from rlhfkit.models.tiny import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    policy_dir = build_tiny_model(work / "policy0", tokenizer, **MODEL)
    rm_dir = None
    if variant == "rm":
        torch.manual_seed(1)
        rm = GPT2ForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
        rm.config.pad_token_id = tokenizer.pad_token_id
        rm.save_pretrained(work / "rm")
        tokenizer.save_pretrained(work / "rm")
        rm_dir = work / "rm"
    return policy_dir, rm_dir


def _force_min_new_tokens(n: int) -> None:
    """Benchmark-only: make the PPO sampler suppress EOS for the first n tokens."""
    from rlhfkit.rollout import generation
    from rlhfkit.stages import ppo

    class MinTokensBackend(generation.HFGenerationBackend):
        def __init__(self, model, tokenizer, cfg):
            super().__init__(model, tokenizer, cfg)
            self.config.min_new_tokens = n

    ppo.HFGenerationBackend = MinTokensBackend


def run_child(args: argparse.Namespace) -> dict:
    """One variant in this process; returns the measured figures."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    from rlhfkit.config import load_config
    from rlhfkit.stages import ppo as ppo_stage
    from rlhfkit.training.metrics import read_metrics

    if args.min_new_tokens:
        _force_min_new_tokens(args.min_new_tokens)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory(prefix="rlhfkit-bench-") as tmp:
        work = Path(tmp)
        policy_dir, rm_dir = _build(work, args.child)
        overrides = [
            f"seed={args.seed}", f"device={args.device}",
            f"ppo.policy.name_or_path={policy_dir}", f"ppo.data.path={_prompts(work / 'prompts.jsonl')}",
            f"ppo.batch_size={BATCH}", f"ppo.mini_batch_size={MINI_BATCH}", f"ppo.gradient_accumulation_steps={ACCUMULATION}",
            f"ppo.num_iterations={args.iterations}", f"ppo.generation.max_new_tokens={NEW_TOKENS}",
            "ppo.generation.temperature=0.7", "ppo.generation.max_prompt_length=32",
            "ppo.learning_rate=1e-4", "ppo.kl.adaptive=false", "ppo.kl.kl_coef=0.05",
            "ppo.logging.progress=false", f"ppo.sample_every={args.iterations + 1}",
        ]
        overrides.append(f"ppo.reward.model_paths=[{rm_dir}]" if rm_dir else "ppo.reward.callable=ppo_throughput:count_e")
        cfg = load_config(None, overrides)
        ppo_stage.validate(cfg)
        n_params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(policy_dir).parameters())
        start = time.perf_counter()
        ppo_stage.run(cfg, work / "out")
        total_wall = time.perf_counter() - start
        # one line per iteration, plus diagnostic/event lines that share the file
        metrics = [m for m in read_metrics(work / "out" / "metrics.jsonl") if "timing/generation" in m]
    measured = metrics[args.warmup :]
    if not measured:
        raise SystemExit(f"--iterations {args.iterations} leaves nothing after {args.warmup} warm-up iteration(s)")
    split = {k: sum(m[f"timing/{k}"] for m in measured) for k in ("generation", "scoring", "training")}
    seconds = sum(split.values())
    tokens = sum(m["rollout/response_length"] * BATCH for m in measured)
    return {
        "variant": args.child,
        "device": cfg.device,
        "threads": torch.get_num_threads(),
        "params_M": n_params / 1e6,
        "iterations_measured": len(measured),
        "seconds": seconds,
        "s_per_iteration": seconds / len(measured),
        "samples_per_s": BATCH * len(measured) / seconds,
        "tokens_per_s": tokens / seconds,
        "mean_response_length": tokens / (BATCH * len(measured)),
        "eos_fraction": sum(m["rollout/eos_fraction"] for m in measured) / len(measured),
        "split_s": split,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "total_wall_s": total_wall,
    }


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nPPO throughput: {BATCH} prompts x <= {NEW_TOKENS} new tokens/iteration, mini-batch {MINI_BATCH} x "
          f"accumulation {ACCUMULATION}, 4 PPO epochs; GPT-2 {MODEL['n_layer']}L/{MODEL['n_embd']}d "
          f"({results[0]['params_M']:.2f}M params); {args.iterations} iterations, first {args.warmup} skipped; "
          f"device {results[0]['device']}, torch threads {results[0]['threads']}"
          + (f"; min_new_tokens forced to {args.min_new_tokens}" if args.min_new_tokens else ""))
    head = f"{'reward':<9} {'s/iter':>7} {'samples/s':>10} {'tokens/s':>9} {'mean len':>9} {'generation':>15} {'scoring':>15} {'training':>15} {'peak RSS':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        cells = []
        for k in ("generation", "scoring", "training"):
            s = r["split_s"][k]
            cells.append(f"{s / r['iterations_measured']:6.2f}s {100 * s / r['seconds']:5.1f}%")
        print(f"{r['variant']:<9} {r['s_per_iteration']:7.2f} {r['samples_per_s']:10.1f} {r['tokens_per_s']:9.0f} "
              f"{r['mean_response_length']:9.1f} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {r['peak_rss_mb']:7.0f}MB")
    print("(time split per measured iteration; scoring = policy/reference/critic forward passes + reward + GAE)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="iterations not counted (default 1)")
    parser.add_argument("--variants", default="callable,rm", help="comma list of callable, rm (default both)")
    parser.add_argument("--min-new-tokens", type=int, default=0, help="force at least this many new tokens (EOS suppressed)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("BENCH_RESULT " + json.dumps(run_child(args)), flush=True)
        return
    results = []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant not in ("callable", "rm"):
            parser.error(f"unknown variant {variant!r}")
        child_args = [a for a in (argv if argv is not None else sys.argv[1:])]
        proc = subprocess.run([sys.executable, __file__, *child_args, "--child", variant],
                              capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
        results.append(json.loads(lines[-1].removeprefix("BENCH_RESULT ")))
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
