"""`rlhfkit label stats / export` and the one-line errors of `label serve`, through the CLI."""

from __future__ import annotations

import json
from contextlib import closing

from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.records import read_preferences
from rlhfkit.label import db
from rlhfkit.label.cli import create_project, default_db

runner = CliRunner()


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for name in ("before", "after"):
        rows = [{"prompt": f"P{i}:", "response": f" {name} {i}"} for i in range(4)]
        (run / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_stats_and_export_of_a_labelled_run(tmp_path):
    run = make_run(tmp_path)
    create_project(default_db(run, None), run, None, "ann,bob", 2, False, None, None, seed=0)
    assert "no labelled pairs" in runner.invoke(app, ["label", "export", "--run", str(run)]).output
    with closing(db.open_project(default_db(run, None))) as con:
        for person in db.annotators(con):
            for item in db.items(con):
                db.add_vote(con, item.id, person.id, "b" if item.id < 4 or person.name == "ann" else "a", {})
    stats = runner.invoke(app, ["label", "stats", "--run", str(run)])
    assert stats.exit_code == 0, stats.output
    # ann b b b b, bob b b b a: p_o = 3/4, p_e = 1 * 3/4 -> kappa 0; alpha defined
    assert "ann · bob (4 shared items)" in stats.output and "0.000" in stats.output
    out = tmp_path / "prefs.jsonl"
    exported = runner.invoke(app, ["label", "export", "--run", str(run), "-o", str(out)])
    assert exported.exit_code == 0 and "wrote 4 preference pairs (1 with a soft label" in exported.output
    records = read_preferences(out)
    assert [r.p_chosen for r in records] == [1.0, 1.0, 1.0, 0.5]


def test_serve_refuses_bad_sources_in_one_line(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "x", "chosen": " a", "rejected": " b"}\n{"prompt": "x", "chosen": " a"}\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "x"}\n')
    cases = [(["--run", str(tmp_path / "none")], "not a finished `rlhfkit run` directory"),
             (["--file", str(prompts)], "prompts.jsonl:1: expected pairs to compare"),
             ([], "give --run RUN, --file FILE or --db PROJECT"),
             (["--file", str(bad)], "pairs.jsonl:2: field 'rejected'"),
             (["--run", str(make_run(tmp_path)), "--annotators", "a,b", "--overlap", "3"], "--overlap must be between"),
             (["--run", str(tmp_path / "run"), "--file", str(bad)], "not both")]
    for args, words in cases:
        result = runner.invoke(app, ["label", "serve", *args])
        assert result.exit_code == 2 and words in result.output.replace("\n", ""), result.output
        assert result.output.startswith("error:") and "Traceback" not in result.output
    assert not (tmp_path / "run" / "label" / "labels.sqlite").exists()  # nothing half-made
