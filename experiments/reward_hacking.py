"""Reward-hacking experiments on the default task: over-optimisation, and the defences compared.

Starts from a finished `rlhfkit run` directory (its SFT policy, reward model, preference data and
task files) and trains PPO variants from the same SFT policy. Every variant is an ordinary run
directory (config.yaml, ppo/, eval/, summary.json, report.html), evaluated on the held-out
prompts by the gold judge (VADER) and, as a common yardstick, by the run's original reward model.

  overopt   one long run with a low KL coefficient: does the gold score peak and fall while the
            proxy keeps rising? (Gao et al. 2022; plot: gold and proxy against √KL)
  provoke   the default run's PPO with β = 0 and 10× the learning rate: the monitor should warn
  compare   single RM vs worst-case (min) and uncertainty-weighted ensembles (Coste et al. 2023)
            vs RM refresh (iterated RLHF), same PPO budget, over several seeds

    python experiments/reward_hacking.py overopt --run runs/DEFAULT --out experiments/out
    python experiments/reward_hacking.py overopt --run runs/DEFAULT --out experiments/out --rm-pairs 1000
    python experiments/reward_hacking.py compare --run runs/DEFAULT --out experiments/out --rm-pairs 3000 \
        --kl-coef 0.002 --iterations 40 --refresh-every 10 --seeds 1 2 3

`--rm-pairs N` optimises a weaker proxy: reward models trained on the first N preference pairs only
(results under OUT/proxy-Npairs). results.json holds every figure; results.md the table (mean ±
sample std over seeds); plots/ the comparison curves, and OUT/plots/overopt_sweep_*.png every
overopt run so far (one line per proxy RM) against √KL. Runs already finished in --out are reused, so an interrupted command can be
repeated, and two commands with different --seeds can share the 2 cores (use --threads 1 each).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import transformers

from rlhfkit.config.load import load_config, save_resolved
from rlhfkit.pipeline import evaluate_run
from rlhfkit.report.html import write_report
from rlhfkit.report.plots import plot_lines, plot_overoptimisation, series
from rlhfkit.stages import ppo as ppo_stage
from rlhfkit.stages import rm as rm_stage
from rlhfkit.tasks.fortunes.task import FortunesTask
from rlhfkit.training.metrics import read_metrics
from rlhfkit.training.progress import console

ENSEMBLE_SIZE = 3


def source_run(run_dir: Path):
    """The finished default run's resolved config and its task (files and gold judge)."""
    cfg = load_config(run_dir / "config.yaml")
    if cfg.task is None or not cfg.ppo.reward.model_paths:
        raise SystemExit(f"{run_dir}: expected a finished `rlhfkit run` of the bundled task (with an rm stage)")
    return cfg, FortunesTask(cfg.task, run_dir / "task", seed=cfg.seed)


def ensemble_members(run_dir: Path, out: Path, k: int, rm_pairs: int | None) -> tuple[list[str], str]:
    """k reward models and the preference file they were trained on.

    Without `rm_pairs`: the run's own RM plus members trained with seeds seed+1, seed+2, ... on the same
    data (other head initialisation and data order). With `rm_pairs`: all k are trained on the first
    `rm_pairs` training pairs only, a weaker proxy that is easier to over-optimise (Gao et al. 2022 vary
    the RM's data the same way). Trained once, reused afterwards."""
    cfg, _ = source_run(run_dir)
    data = cfg.rm.data.path
    paths: list[str] = [] if rm_pairs else list(cfg.ppo.reward.model_paths)
    folder = out / (f"rm-members-{rm_pairs}pairs" if rm_pairs else "rm-members")
    if rm_pairs:
        lines = Path(data).read_text(encoding="utf-8").splitlines(keepends=True)
        if rm_pairs > len(lines):
            raise SystemExit(f"--rm-pairs {rm_pairs}: {data} holds only {len(lines)} pairs")
        subset = folder / "pairs.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text("".join(lines[:rm_pairs]), encoding="utf-8")
        data = str(subset)
    for member in range(len(paths), k):
        member_cfg = load_config(run_dir / "config.yaml", [f"seed={cfg.seed + member}", "rm.logging.progress=false",
                                                            f"rm.data.path={data}"])
        console.rule(f"reward model member {member}")
        paths.append(str(rm_stage.run(member_cfg, folder / f"rm-{member}", resume=True).checkpoint))
    return paths, data


def run_variant(run_dir: Path, out: Path, name: str, seed: int, overrides: list[str]) -> dict:
    """PPO from the run's SFT policy under `overrides`, then the held-out evaluation and a report."""
    cfg, task = source_run(run_dir)
    variant_dir = out / name / f"seed-{seed}"
    done = variant_dir / "summary.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary["overrides"] != overrides:
            raise SystemExit(f"{variant_dir} was run with other settings ({summary['overrides']}): use another --out")
        return summary
    variant = load_config(run_dir / "config.yaml", [f"seed={seed}", f"output_dir={variant_dir}", "stages=[ppo]",
                                                    "ppo.logging.progress=false", *overrides])
    save_resolved(variant, variant_dir / "config.yaml")
    console.rule(f"{name} · seed {seed}")
    start = time.perf_counter()
    result = ppo_stage.run(variant, variant_dir / "ppo", observer=task.ppo_observer(), labeler=task.label_preferences, resume=True)
    ppo_seconds = time.perf_counter() - start
    # One yardstick for every variant: the run's original single reward model, mean-combined.
    yardstick = load_config(variant_dir / "config.yaml", [f"ppo.reward.model_paths=[{cfg.ppo.reward.model_paths[0]}]",
                                                          "ppo.reward.ensemble=mean"])
    evaluation = evaluate_run(yardstick, variant_dir, Path(cfg.ppo.policy.name_or_path), result.checkpoint, task)
    summary = {"variant": name, "seed": seed, "overrides": overrides, "stages": {"ppo": result.metrics},
               "evaluation": evaluation, "wall_time": {"ppo": round(ppo_seconds, 1)}, "curves": _curves(variant_dir)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    write_report(variant_dir)
    tmp.replace(done)
    return summary


def _curves(variant_dir: Path) -> dict:
    """Per-iteration proxy, gold and KL, and the gold peak."""
    lines = [m for m in read_metrics(variant_dir / "ppo" / "metrics.jsonl") if "objective/scores" in m]
    gold = [m.get("gold/score") for m in lines]
    peak = max(range(len(gold)), key=lambda i: gold[i]) if gold else None
    return {
        "iteration": [m["step"] for m in lines], "proxy": [m["objective/scores"] for m in lines],
        "gold": gold, "kl": [m["objective/kl"] for m in lines],
        "gold_peak": None if peak is None else {"iteration": lines[peak]["step"], "gold": gold[peak], "kl": lines[peak]["objective/kl"]},
    }


# ------------------------------------------------------------------------------------ experiments

def overopt(args) -> None:
    overrides = [f"ppo.num_iterations={args.iterations}", f"ppo.kl.kl_coef={args.kl_coef}", "ppo.kl.adaptive=false",
                 "ppo.lr_scheduler=constant", "ppo.sample_every=20"]
    if args.rm_pairs:  # optimise the weaker proxy instead of the run's own RM
        members, _ = ensemble_members(args.run, args.out, 1, args.rm_pairs)
        overrides.append(f"ppo.reward.model_paths=[{members[0]}]")
    summary = run_variant(args.run, args.out, "overopt", args.seeds[0], overrides)
    curves = summary["curves"]
    records = read_metrics(args.out / "overopt" / f"seed-{args.seeds[0]}" / "ppo" / "metrics.jsonl")
    plots = args.out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot_overoptimisation(plots / "overopt_vs_sqrt_kl.png", records)
    tail = slice(-5, None)  # the last five iterations, against the gold peak
    result = {"rm_pairs": args.rm_pairs, "kl_coef": args.kl_coef, "iterations": args.iterations, "gold_peak": curves["gold_peak"],
              "final_gold_last5": statistics.fmean(curves["gold"][tail]), "final_proxy_last5": statistics.fmean(curves["proxy"][tail]),
              "final_kl_last5": statistics.fmean(curves["kl"][tail]), "proxy_at_gold_peak": curves["proxy"][curves["iteration"].index(curves["gold_peak"]["iteration"])],
              "evaluation": summary["evaluation"]}
    _save_results(args.out, "overopt", result)
    _plot_overopt_sweep(args.base_out)
    console.print_json(json.dumps(result))


def _plot_overopt_sweep(base_out: Path) -> None:
    """Every overopt run under base_out (the run's own RM, and each --rm-pairs proxy) on one pair of
    axes: gold against √KL, and the proxy against √KL — Gao et al.'s figure, one line per proxy RM."""
    runs = sorted(base_out.glob("overopt/seed-*")) + sorted(base_out.glob("proxy-*pairs/overopt/seed-*"),
                                                             key=lambda d: int(d.parts[-3].split("-")[1][:-5]))
    gold_lines, proxy_lines = [], []
    for run in runs:
        records = [m for m in read_metrics(run / "ppo" / "metrics.jsonl") if "objective/kl" in m and "gold/score" in m]
        if not records:
            continue
        points = sorted((math.sqrt(max(m["objective/kl"], 0.0)), m["gold/score"], m["objective/scores"]) for m in records)
        proxy_dir = run.parts[-3]
        label = f"RM on {proxy_dir.split('-')[1][:-5]} pairs" if proxy_dir.startswith("proxy-") else "the run's RM (all pairs)"
        gold_lines.append((label, ([p[0] for p in points], [p[1] for p in points])))
        proxy_lines.append((label, ([p[0] for p in points], [p[2] for p in points])))
    plots = base_out / "plots"
    plot_lines(plots / "overopt_sweep_gold.png", "Gold score against √KL, per proxy RM", "√KL(policy ‖ reference)  [√nats]",
               "gold score (VADER)", gold_lines)
    plot_lines(plots / "overopt_sweep_proxy.png", "Proxy score against √KL, per proxy RM", "√KL(policy ‖ reference)  [√nats]",
               "proxy score (the RM being optimised)", proxy_lines)


def provoke(args) -> None:
    """The default run's PPO provoked into hacking: no KL penalty and a 10× learning rate. The monitor
    should warn here, and stays silent on the default run (compare the two reports' Warnings)."""
    cfg, _ = source_run(args.run)
    overrides = [f"ppo.num_iterations={args.iterations}", "ppo.kl.kl_coef=0.0", "ppo.kl.adaptive=false",
                 f"ppo.learning_rate={cfg.ppo.learning_rate * 10:g}"]
    run_variant(args.run, args.out, "provoked", args.seeds[0], overrides)
    warned = {}
    for name, run in (("default run", args.run), ("provoked", args.out / "provoked" / f"seed-{args.seeds[0]}")):
        warned[name] = [m["diagnostic"] for m in read_metrics(run / "ppo" / "metrics.jsonl") if "diagnostic" in m]
        console.print(f"[bold]{name}[/]: {len(warned[name])} warning(s)")
        for line in warned[name]:
            console.print("  " + line)
    _save_results(args.out, "provoke", {"overrides": overrides, "warnings": warned})


def variants(args, members: list[str], rm_data: str) -> dict[str, list[str]]:
    """Same PPO budget for all; they differ only in the reward. `single` and `refresh` start from member 0,
    and the refresh replays old pairs from the data the members were trained on."""
    cfg, _ = source_run(args.run)
    common = [f"ppo.num_iterations={args.iterations}", f"ppo.kl.kl_coef={args.kl_coef}", "ppo.kl.adaptive=false"]
    single = f"ppo.reward.model_paths=[{members[0]}]"
    ensemble = f"ppo.reward.model_paths=[{','.join(members)}]"
    # Control: members differ in held-out accuracy, so an ensemble could win only by containing a
    # better member than member 0. `single-best` optimises the most accurate member alone.
    best = max(members, key=_held_out_accuracy)
    return {
        "single": [*common, single],
        **({"single-best": [*common, f"ppo.reward.model_paths=[{best}]"]} if best != members[0] else {}),
        "ensemble-min": [*common, ensemble, "ppo.reward.ensemble=min"],
        "ensemble-uncertainty": [*common, ensemble, "ppo.reward.ensemble=uncertainty", "ppo.reward.uncertainty_penalty=1.0"],
        "refresh": [*common, single, f"ppo.reward_refresh.every={args.refresh_every}", "ppo.reward_refresh.labeler=task",
                    f"ppo.reward_refresh.old_data={rm_data}", f"ppo.reward_refresh.eval_data={cfg.rm.data.eval_path}"],
    }


def _held_out_accuracy(model_path: str) -> float:
    """A reward model's held-out pairwise accuracy, from its stage's done.json."""
    done = json.loads((Path(model_path).parent / "done.json").read_text())
    return done["metrics"]["eval/accuracy"]


def compare(args) -> None:
    members, rm_data = ensemble_members(args.run, args.out, ENSEMBLE_SIZE, args.rm_pairs)
    table: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name, overrides in variants(args, members, rm_data).items():
            if args.only and name not in args.only:
                continue
            summary = run_variant(args.run, args.out, name, seed, overrides)
            ev = summary["evaluation"]
            table.setdefault(name, []).append({
                "seed": seed, "gold": ev["after"]["gold_mean"], "proxy_original_rm": ev["after"].get("proxy_mean"),
                "kl": ev["after"]["kl"], "win_rate_vs_sft": ev.get("win_rate"), "length": ev["after"]["length"],
                "gold_peak_iteration": summary["curves"]["gold_peak"]["iteration"], "ppo_seconds": summary["wall_time"]["ppo"],
            })
    _save_results(args.out, "compare", {"rm_pairs": args.rm_pairs, "kl_coef": args.kl_coef, "iterations": args.iterations, "refresh_every": args.refresh_every,
                                        "per_seed": table, "mean_std": {n: _mean_std(rows) for n, rows in table.items()}})
    _plot_compare(args.out, table)
    _write_markdown(args.out)


def _mean_std(rows: list[dict]) -> dict[str, list[float]]:
    out = {}
    for key in ("gold", "proxy_original_rm", "kl", "win_rate_vs_sft", "length"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan]
    return out


def _plot_compare(out: Path, table: dict[str, list[dict]]) -> None:
    """Gold and proxy per iteration, averaged over seeds, one line per variant."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for key, stem, label in (("gold/score", "gold", "gold score"), ("objective/scores", "proxy", "proxy score (the variant's own reward)"),
                              ("objective/kl", "kl", "KL per response (objective/kl)")):
        lines = []
        for name, rows in table.items():
            runs = [read_metrics(out / name / f"seed-{r['seed']}" / "ppo" / "metrics.jsonl") for r in rows]
            curves = [series(run, key) for run in runs]
            n = min(len(c[0]) for c in curves)
            if n:
                lines.append((name, (curves[0][0][:n], [statistics.fmean(c[1][i] for c in curves) for i in range(n)])))
        plot_lines(plots / f"compare_{stem}.png", f"{label}, mean over seeds", "PPO iteration", label, lines)
    for name, rows in table.items():  # Gao et al.'s picture per variant, every seed's iterations pooled
        pooled = [m for r in rows for m in read_metrics(out / name / f"seed-{r['seed']}" / "ppo" / "metrics.jsonl")]
        plot_overoptimisation(plots / f"compare_overopt_{name}.png", pooled)


def _save_results(out: Path, key: str, value: dict) -> None:
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    results.setdefault("torch_threads", torch.get_num_threads())
    path.write_text(json.dumps(results, indent=2))


def _write_markdown(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    rows = ["| variant | gold (held-out) | proxy by original RM | exact KL | win rate vs SFT | length |",
            "|---|---|---|---|---|---|"]
    for name, stats in results["compare"]["mean_std"].items():
        cells = [f"{m:.3f} ± {s:.3f}" if not math.isnan(s) else f"{m:.3f}" for m, s in
                 (stats.get(k, [math.nan, math.nan]) for k in ("gold", "proxy_original_rm", "kl", "win_rate_vs_sft", "length"))]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=["overopt", "compare", "provoke"])
    parser.add_argument("--run", type=Path, required=True, help="A finished `rlhfkit run` directory of the default task.")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iterations", type=int, default=None, help="PPO iterations (overopt: 150, compare: 60, provoke: 40).")
    parser.add_argument("--kl-coef", type=float, default=None, help="Fixed β (overopt: 0.002, compare: 0.01).")
    parser.add_argument("--refresh-every", type=int, default=15)
    parser.add_argument("--rm-pairs", type=int, default=None,
                        help="Train the proxy RM(s) on only the first N preference pairs (a weaker, more hackable proxy); "
                             "results go to OUT/proxy-Npairs.")
    parser.add_argument("--only", nargs="*", help="compare: run only these variants.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 when two commands share the cores).")
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()  # per-load bars and reports would bury the output
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = {"overopt": (150, 0.002), "compare": (60, 0.01), "provoke": (40, 0.0)}[args.experiment]
    args.iterations = args.iterations or defaults[0]
    args.kl_coef = args.kl_coef if args.kl_coef is not None else defaults[1]
    args.base_out = args.out
    if args.rm_pairs:
        args.out = args.out / f"proxy-{args.rm_pairs}pairs"
    {"overopt": overopt, "compare": compare, "provoke": provoke}[args.experiment](args)


if __name__ == "__main__":
    main()
