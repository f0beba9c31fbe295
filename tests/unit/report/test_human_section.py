"""report.html's Human evaluation section, from a labelling project in RUN/label/."""

from __future__ import annotations

import json
from contextlib import closing

from rlhfkit.label import db, sources
from rlhfkit.report.html import write_report


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for name, word in (("before", "<script>alert(1)</script>"), ("after", "lovely")):
        rows = [{"prompt": f"Prompt {i}:", "response": f" {word} {i}", "gold": 0.1} for i in range(4)]
        (run / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_section_appears_with_win_rate_ratings_and_agreement(tmp_path):
    run = make_run(tmp_path)
    assert "Human evaluation" not in write_report(run).read_text()  # no labels: no section
    path = run / "label" / "labels.sqlite"
    db.create(path, sources.from_run(run), ["ann", "bob"], 2, rate=True, guidelines="", source=str(run))
    with closing(db.open_project(path)) as con:
        for person in db.annotators(con):
            for item in db.items(con):  # PPO (b) wins 3 of 4 for both; item 4 a tie
                choice = "tie" if item.id == 4 else "b"
                db.add_vote(con, item.id, person.id, choice, {"a_helpful": 2, "a_harmless": 6, "a_honest": 4,
                                                               "b_helpful": 6, "b_harmless": 7, "b_honest": 4})
    page = write_report(run).read_text()
    assert '<h2 id="human">Human evaluation: SFT vs PPO</h2>' in page
    # win rate (3 + 0.5) / 4 per annotator = 0.875 over 8 votes
    assert "<td class=\"num\">0.875</td>" in page and "3 / 0 / 1 / 0" not in page and "6 / 0 / 2 / 0" in page
    assert "2.00" in page and "6.00" in page and "+4.00" in page  # helpful: SFT 2, PPO 6
    assert "Cohen's κ, ann · bob (4 shared)" in page
    assert "<script>alert(1)</script>" not in page  # the eval samples table escapes it too
