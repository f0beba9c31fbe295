"""From stored votes to figures: agreement (admin page, `label stats`), preference records with vote
counts (`label export`), and the human evaluation of SFT vs PPO (report.html).

Choices are stored in each item's own orientation (a / b), never in the display order, so votes of
annotators who saw the pair swapped are comparable. "both bad" counts as a tie for a preference
(neither response is preferred) but stays its own category for agreement.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rlhfkit.label.agreement import (
    agreement_with_majority,
    cohen_kappa,
    krippendorff_alpha,
    mean_interval,
    wilson_interval,
)
from rlhfkit.label.db import SCALES, Item, Vote


def agreement(votes: Sequence[Vote], rate: bool, names: Sequence[str] = ()) -> dict[str, Any]:
    """κ per annotator pair (on the items both labelled), α overall, agreement with the majority.
    `names`: every annotator of the project, so that those without votes yet are listed too."""
    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for vote in votes:
        by_item[vote.item_id][vote.annotator] = vote.choice
    names = sorted({*names, *(vote.annotator for vote in votes)})
    pairs = []
    for first, second in itertools.combinations(names, 2):
        shared = [labels for labels in by_item.values() if first in labels and second in labels]
        pairs.append({"annotators": (first, second), "items": len(shared),
                      "kappa": cohen_kappa([s[first] for s in shared], [s[second] for s in shared])})
    majority = agreement_with_majority(by_item)
    out: dict[str, Any] = {
        "votes": len(votes),
        "items_with_two_or_more": sum(len(labels) >= 2 for labels in by_item.values()),
        "alpha_choice": krippendorff_alpha([list(labels.values()) for labels in by_item.values()], "nominal"),
        "kappa_pairs": pairs,
        "majority_agreement": {name: majority.get(name) for name in names},
    }
    if rate:  # one unit per (item, side): the ratings the response received on that scale
        for scale in SCALES:
            units: dict[tuple[int, str], list[int]] = defaultdict(list)
            for vote in votes:
                for side in ("a", "b"):
                    value = vote.ratings.get(f"{side}_{scale}")
                    if value is not None:
                        units[(vote.item_id, side)].append(value)
            out[f"alpha_{scale}"] = krippendorff_alpha(list(units.values()), "ordinal")
    return out


def preference_counts(choices: Sequence[str]) -> dict[str, int]:
    """{"a", "b", "tie"} counts of a pair's votes; "both bad" counts as a tie."""
    return {"a": choices.count("a"), "b": choices.count("b"), "tie": choices.count("tie") + choices.count("both_bad")}


def export_records(items: Sequence[Item], votes: Sequence[Vote]) -> list[dict[str, Any]]:
    """One preference record per voted item: the more preferred response is `chosen`, with `votes`
    and p_chosen = (votes for chosen + ½ ties) / votes, the soft Bradley–Terry target."""
    choices: dict[int, list[str]] = defaultdict(list)
    for vote in votes:
        choices[vote.item_id].append(vote.choice)
    records = []
    for item in items:
        if item.id not in choices or item.response_a == item.response_b:
            continue  # no votes, or two identical responses: no comparison to learn from
        if not item.response_a.strip() or not item.response_b.strip():
            continue  # the preference format needs two non-empty responses
        count = preference_counts(choices[item.id])
        a_first = count["a"] >= count["b"]
        chosen, rejected = (item.response_a, item.response_b) if a_first else (item.response_b, item.response_a)
        n_chosen, n_rejected = (count["a"], count["b"]) if a_first else (count["b"], count["a"])
        total = n_chosen + n_rejected + count["tie"]
        records.append({"prompt": item.prompt, "chosen": chosen, "rejected": rejected,
                        "votes": {"chosen": n_chosen, "rejected": n_rejected, "tie": count["tie"]},
                        "p_chosen": (n_chosen + 0.5 * count["tie"]) / total, "item": item.id,
                        "origin": {"chosen": item.origin_a if a_first else item.origin_b,
                                   "rejected": item.origin_b if a_first else item.origin_a}})
    return records


def human_evaluation(items: Sequence[Item], votes: Sequence[Vote]) -> dict[str, Any] | None:
    """PPO vs SFT from people's votes: win rate (ties ½) with a Wilson 95 % interval, and each
    H/H/H scale's mean for both with a 95 % interval. Votes are the unit (an item labelled by
    three people counts three times), which the report says. None without SFT/PPO items."""
    sides = {item.id: ({"sft": "a", "ppo": "b"} if item.origin_a == "sft" else {"sft": "b", "ppo": "a"})
             for item in items if {item.origin_a, item.origin_b} == {"sft", "ppo"}}
    relevant = [vote for vote in votes if vote.item_id in sides]
    if not relevant:
        return None
    wins = sum(1.0 if v.choice == sides[v.item_id]["ppo"] else 0.0 if v.choice == sides[v.item_id]["sft"] else 0.5
               for v in relevant)
    n = len(relevant)
    out: dict[str, Any] = {
        "votes": n,
        "items": len({v.item_id for v in relevant}),
        "annotators": len({v.annotator for v in relevant}),
        "win_rate_ppo": wins / n,
        "win_rate_interval": wilson_interval(wins, n),
        "choices": {label: sum(v.choice == sides[v.item_id].get(label, label) for v in relevant)
                    for label in ("ppo", "sft", "tie", "both_bad")},
        "ratings": {},
    }
    for scale in SCALES:
        for policy in ("sft", "ppo"):
            values = [v.ratings[f"{sides[v.item_id][policy]}_{scale}"] for v in relevant]
            values = [x for x in values if x is not None]
            if values:
                out["ratings"][f"{policy}_{scale}"] = {"n": len(values), "mean": sum(values) / len(values),
                                                       "interval": (mean_interval(values) or (None, None, None))[1:]}
    return out
