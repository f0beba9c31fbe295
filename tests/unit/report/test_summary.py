"""The console summary's headline figures, read from summary.json."""

from rlhfkit.report.summary import headline_rows


def test_headline_rows_show_diversity_and_reference_perplexity_before_and_after():
    summary = {"evaluation": {
        "before": {"distinct_2": 0.85, "ref_perplexity": 39.5, "gold_mean": 0.04},
        "after": {"distinct_2": 0.72, "ref_perplexity": 41.0, "gold_mean": 0.6},
        "win_rate": 0.93, "win_rate_judge": "gold",
    }}
    rows = dict(headline_rows(summary))
    assert rows["distinct-2 SFT → PPO"] == (0.85, 0.72)
    assert rows["perplexity under SFT model SFT → PPO"] == (39.5, 41.0)
    assert rows["win rate PPO vs SFT (gold)"] == 0.93


def test_headline_rows_without_evaluation_are_empty_not_errors():
    rows = dict(headline_rows({"stages": {"sft": {"eval/loss": 2.0}}}))
    assert rows["SFT held-out loss"] == 2.0
    assert rows["perplexity under SFT model SFT → PPO"] == (None, None)
    assert rows["win rate PPO vs SFT (—)"] is None
