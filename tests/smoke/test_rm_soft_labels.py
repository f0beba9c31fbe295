"""`rlhfkit rm` on preference records with people's votes: the soft targets reach the loss.

Same pairs twice: hard labels teach the tiny RM to separate them (large margin); the same pairs
with votes 1:1 (p_chosen = 0.5, people split evenly) teach it that neither is better (margin ≈ 0).
"""

from __future__ import annotations

import json
import random

from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.training.metrics import read_metrics

runner = CliRunner()


def pairs(n: int, seed: int, votes: dict | None) -> list[dict]:
    rng = random.Random(seed)
    good, bad = ["good", "great", "happy", "love", "joy"], ["sad", "grey", "rain", "gloomy", "lazy"]
    out = []
    for _ in range(n):
        record = {"prompt": "you will", "chosen": " " + " ".join(rng.choice(good) for _ in range(3)),
                  "rejected": " " + " ".join(rng.choice(bad) for _ in range(3))}
        out.append(record if votes is None else {**record, "votes": votes})
    return out


def train(tmp_path, name: str, votes: dict | None) -> tuple[dict, dict]:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs(64, 1, votes)))
    held_out = tmp_path / f"{name}_eval.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in pairs(24, 2, None)))
    out = tmp_path / name
    return out, [data, held_out]


def test_soft_labels_from_votes_change_what_the_reward_model_learns(tmp_path, tiny_model_dir):
    margins = {}
    for name, votes in (("hard", None), ("split", {"chosen": 1, "rejected": 1})):
        out, (data, held_out) = train(tmp_path, name, votes)
        result = runner.invoke(app, [
            "rm", "-o", str(out), "--set", f"rm.model.name_or_path={tiny_model_dir}", "--set", f"rm.data.path={data}",
            "--set", f"rm.data.eval_path={held_out}", "--set", "rm.optim.learning_rate=3e-3", "--set", "rm.optim.epochs=3",
            "--set", "rm.optim.batch_size=8", "--set", "rm.logging.progress=false"])
        assert result.exit_code == 0, result.output
        stats = json.loads((out / "rm" / "data_stats.json").read_text())
        assert stats["soft_label_pairs"] == (0 if votes is None else 64)
        margins[name] = [m for m in read_metrics(out / "rm" / "metrics.jsonl") if "eval/margin" in m][-1]["eval/margin"]
    assert margins["hard"] > 1.0  # separated
    assert abs(margins["split"]) < 0.5  # p = 0.5: pulled to r_c = r_r (measured: 11.0 hard vs 0.007 split)
