"""How much of a reward-model batch is real tokens: a run's training pairs, tokenized as the RM stage
tokenizes them, batched by the RM stage's loader shuffled and length-grouped (`rm.optim.group_by_length`),
each side padded to its batch's longest row as PreferenceCollator pads it (docs/reward-hacking.md §0f):

    python experiments/rm_padding.py RUN [--batch-size 32]
"""

import argparse
from pathlib import Path

import torch

from rlhfkit.config.load import load_config
from rlhfkit.config.sections import ModelSection
from rlhfkit.data.tokenize import tokenize_preferences
from rlhfkit.models.load import load_tokenizer
from rlhfkit.stages.rm import read_preference_data
from rlhfkit.training.loop import _seeded_loader


def real_fraction(pairs: list[dict], batch_size: int, grouped: bool, seed: int) -> float:
    loader = _seeded_loader(pairs, batch_size, lambda rows: rows, torch.Generator().manual_seed(seed), grouped)
    real = padded = 0
    for rows in loader:
        for side in ("chosen_input_ids", "rejected_input_ids"):
            lengths = [len(r[side]) for r in rows]
            real, padded = real + sum(lengths), padded + max(lengths) * len(lengths)
    return real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml")
    train, _ = read_preference_data(cfg.rm, cfg.seed)
    tokenizer = load_tokenizer(ModelSection(name_or_path=cfg.rm.model.name_or_path), "rm.model")
    pairs = tokenize_preferences(train, tokenizer, cfg.rm.data.max_length)
    for grouped in (False, True):
        print(f"{'length-grouped' if grouped else 'shuffled':>14}: {real_fraction(pairs, args.batch_size, grouped, cfg.seed):.3f} "
              f"of the padded tokens real ({len(pairs)} pairs, batch {args.batch_size})")


if __name__ == "__main__":
    main()
