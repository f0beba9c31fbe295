"""Agreement with gold of reward models on a fortunes run's held-out pairs: each alone, then their mean.

The figure `rlhfkit run` reports as `rm_gold_accuracy` (FortunesTask.rm_gold_accuracy: noise-free
gold preferences, gold ties skipped, the ensemble combined as PPO's reward combines it), for RMs
trained outside the run, e.g. `rlhfkit rm -c RUN/config.yaml -o OUT --set KEY=VALUE`
(docs/reward-hacking.md §0e):

    python experiments/rm_gold_accuracy.py RUN OUT/rm/model RUN/rm-1/model ...
"""

import argparse
from pathlib import Path

import torch

from rlhfkit.config.load import load_config
from rlhfkit.tasks.fortunes.task import FortunesTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished fortunes run directory (its task/ and config.yaml)")
    parser.add_argument("models", nargs="+", help="reward-model directories")
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml")
    task = FortunesTask(cfg.task, args.run / "task", seed=cfg.seed)
    cpu = torch.device("cpu")
    for model in args.models:
        print(f"{model}: {task.rm_gold_accuracy([model], cfg.ppo.reward, cpu):.4f}", flush=True)
    if len(args.models) > 1:
        print(f"mean of the {len(args.models)}: {task.rm_gold_accuracy(args.models, cfg.ppo.reward, cpu):.4f}")


if __name__ == "__main__":
    main()
