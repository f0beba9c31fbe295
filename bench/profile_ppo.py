"""Where one PPO iteration's time and memory go: torch.profiler over rlhfkit's PPO stage on
bench/compare_trl.py's shared work (issue 15, item 2: "profile first").

    OMP_NUM_THREADS=2 .venv/bin/python bench/profile_ppo.py --size 6x512              # quiet machine
    OMP_NUM_THREADS=2 .venv/bin/python bench/profile_ppo.py --size 2x128 --set ppo.micro_batch_tokens=4096

It builds (or reuses) the same work compare_trl.py builds (compare_trl_work.build_work, under the
same work directory), runs rlhfkit's PPO stage with compare_trl_rlhfkit.py's settings for
`--iterations` iterations and profiles the last one's three phases (generation, experience,
update: the calls `stages.ppo` makes), each on its own. Per phase it prints the wall time and the
operators with the most self CPU time (`--top`), with their share of the phase; and, with
`--memory`, the operators that allocated the most. `--trace DIR` writes a Chrome trace per phase.
The profiler adds a little overhead per operator, so the phase times printed here are a few per
cent above compare_trl.py's; read shares, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_trl_rlhfkit import _force_full_length, overrides  # noqa: E402
from compare_trl_work import build_work  # noqa: E402


def _profiled(fn, name: str, when, results: dict, args):
    """`fn` wrapped: the call for which `when()` is true runs under torch.profiler."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    def wrapper(*a, **k):
        if not when():
            return fn(*a, **k)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=args.memory, record_shapes=args.shapes) as prof:
            t0 = time.perf_counter()
            out = fn(*a, **k)
            wall = time.perf_counter() - t0
        results[name] = (wall, prof)
        if args.trace:
            args.trace.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(args.trace / f"{name}.json"))
        return out

    del torch
    return wrapper


def _report(name: str, wall: float, prof, args) -> None:
    events = prof.key_averages(group_by_input_shape=args.shapes)
    total = sum(e.self_cpu_time_total for e in events) / 1e6 or 1e-9
    print(f"\n== {name}: {wall:.3f} s wall, {total:.3f} s self CPU time in operators")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    for e in rows:
        shapes = f"  {e.input_shapes}" if args.shapes else ""
        print(f"  {e.self_cpu_time_total / 1e6:8.3f} s {100 * e.self_cpu_time_total / 1e6 / total:5.1f} %  "
              f"{e.count:6d} calls  {e.key}{shapes}")
    if args.memory:
        print(f"  -- most memory allocated ({name})")
        for e in sorted(events, key=lambda e: e.self_cpu_memory_usage, reverse=True)[: args.top // 2]:
            print(f"  {e.self_cpu_memory_usage / 2**20:10.1f} MiB  {e.count:6d} calls  {e.key}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="2x128", help="LAYERSxWIDTH (default 2x128)")
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--iterations", type=int, default=3, help="PPO iterations; the last is profiled (default 3)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--top", type=int, default=20, help="operators listed per phase (default 20)")
    p.add_argument("--memory", action="store_true", help="also the operators that allocated the most")
    p.add_argument("--shapes", action="store_true", help="group operators by input shape")
    p.add_argument("--trace", type=Path, help="write a Chrome trace per phase into this folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra rlhfkit config overrides")
    p.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "rlhfkit" / "bench-compare-trl")
    args = p.parse_args(argv)

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from rlhfkit.config import load_config
    from rlhfkit.stages import ppo as ppo_stage

    layers, width = (int(x) for x in args.size.lower().split("x"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = build_work(args.work_dir, layers, width, args.response_length, batch=64, prompt_tokens=16)
    work.update(threads=args.threads, iterations=args.iterations, batch_size=64, ppo_epochs=4, temperature=0.7,
                learning_rate=3e-4, kl_coef=0.05, seed=0)
    _force_full_length(args.response_length)

    calls = {"rollout": 0, "experience": 0, "update": 0}
    results: dict = {}

    def last(name):
        def when():
            calls[name] += 1
            return calls[name] == args.iterations
        return when

    ppo_stage._sample = _profiled(ppo_stage._sample, "rollout", last("rollout"), results, args)
    ppo_stage.make_experience = _profiled(ppo_stage.make_experience, "experience", last("experience"), results, args)
    ppo_stage.ppo_update = _profiled(ppo_stage.ppo_update, "update", last("update"), results, args)
    with tempfile.TemporaryDirectory(prefix="rlhfkit-profile-") as tmp:
        cfg = load_config(None, overrides(work) + args.set)
        ppo_stage.validate(cfg)
        ppo_stage.run(cfg, Path(tmp) / "ppo")
    print(f"\n{args.size}, {args.response_length} response tokens, {args.threads} thread(s), "
          f"iteration {args.iterations} of {args.iterations}; overrides: {json.dumps(args.set)}")
    for name in ("rollout", "experience", "update"):
        if name in results:
            _report(name, *results[name], args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
