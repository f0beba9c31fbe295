"""From votes to export records, agreement figures and the human evaluation, on hand-made votes."""

from __future__ import annotations

import pytest

from rlhfkit.label.db import RATING_COLUMNS, Item, Vote
from rlhfkit.label.results import agreement, export_records, human_evaluation

ITEMS = [Item(1, "p1", " sft one", " ppo one", "sft", "ppo"), Item(2, "p2", " ppo two", " sft two", "ppo", "sft"),
         Item(3, "p3", " same", " same", "sft", "ppo")]


def v(item: int, who: str, choice: str, **ratings: int) -> Vote:
    return Vote(item, who, choice, {key: ratings.get(key) for key in RATING_COLUMNS})


def test_export_counts_votes_and_makes_the_soft_label():
    votes = [v(1, "ann", "b"), v(1, "bob", "b"), v(1, "cy", "a"), v(2, "ann", "tie"), v(2, "bob", "both_bad"),
             v(2, "cy", "b"), v(3, "ann", "tie")]
    records = export_records(ITEMS, votes)
    # item 1: b (ppo) 2, a 1 -> chosen = ppo, p = 2/3; item 2: b 1, ties 2 -> chosen = b (sft), p = (1 + 1) / 3;
    # item 3: identical responses, not a comparison -> left out
    assert [(r["item"], r["chosen"], r["votes"], r["p_chosen"]) for r in records] == [
        (1, " ppo one", {"chosen": 2, "rejected": 1, "tie": 0}, pytest.approx(2 / 3)),
        (2, " sft two", {"chosen": 1, "rejected": 0, "tie": 2}, pytest.approx(2 / 3)),
    ]
    assert records[0]["origin"] == {"chosen": "ppo", "rejected": "sft"}


def test_human_evaluation_win_rate_and_ratings():
    votes = [v(1, "ann", "b", a_helpful=2, b_helpful=6), v(1, "bob", "a", a_helpful=4, b_helpful=4),
             v(2, "ann", "a", a_helpful=5, b_helpful=3), v(2, "bob", "tie", a_helpful=7, b_helpful=1)]
    human = human_evaluation(ITEMS, votes)
    # PPO is b on item 1 and a on item 2: wins 1 + 0 + 1 + 0.5 = 2.5 of 4
    assert human["win_rate_ppo"] == pytest.approx(0.625) and human["votes"] == 4 and human["items"] == 2
    assert human["choices"] == {"ppo": 2, "sft": 1, "tie": 1, "both_bad": 0}
    # helpful of PPO: item 1 b = 6, 4; item 2 a = 5, 7 -> mean 5.5; of SFT: 2, 4, 3, 1 -> 2.5
    assert human["ratings"]["ppo_helpful"]["mean"] == pytest.approx(5.5)
    assert human["ratings"]["sft_helpful"]["mean"] == pytest.approx(2.5)
    low, high = human["win_rate_interval"]
    assert low < 0.625 < high
    assert "ppo_harmless" not in human["ratings"]  # nobody rated it
    assert human_evaluation([Item(1, "p", " x", " y", "chosen", "rejected")], [v(1, "ann", "a")]) is None


def test_agreement_figures():
    votes = [v(1, "ann", "a"), v(1, "bob", "a"), v(2, "ann", "b"), v(2, "bob", "a")]
    figures = agreement(votes, rate=False, names=["ann", "bob", "cy"])
    # ann vs bob on 2 items: p_o = 1/2; ann a,b; bob a,a -> p_e = (1 * 2 + 1 * 0) / 4 = 0.5 -> kappa 0
    pairs = {tuple(p["annotators"]): (p["items"], p["kappa"]) for p in figures["kappa_pairs"]}
    assert pairs[("ann", "bob")] == (2, pytest.approx(0.0))
    assert pairs[("ann", "cy")] == (0, None)  # cy has no votes yet: listed, undefined
    assert figures["items_with_two_or_more"] == 2 and figures["votes"] == 4
    assert figures["majority_agreement"] == {"ann": 0.5, "bob": 0.5, "cy": None}
