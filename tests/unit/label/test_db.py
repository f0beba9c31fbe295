"""The project file: creation refuses nonsense in one line, assignments share items, votes count once."""

from __future__ import annotations

import sqlite3

import pytest

from rlhfkit.label import db

ITEMS = [db.Item(i + 1, f"p{i}", f" a{i}", f" b{i}") for i in range(5)]


def test_create_assigns_each_item_to_overlap_annotators(tmp_path):
    path = tmp_path / "p.sqlite"
    db.create(path, ITEMS, ["ann", "bob", "cy"], 2, rate=False, guidelines="", source="t")
    con = db.open_project(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    per_item = con.execute("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id").fetchall()
    assert per_item == [(i + 1, 2) for i in range(5)]
    assert sum(total for _, total in db.assignment_counts(con).values()) == 10
    tokens = [a.token for a in db.annotators(con)]
    assert len(set(tokens)) == 3 and all(len(t) >= 24 for t in tokens)
    ann = db.annotators(con)[0]
    item, _ = db.next_assignment(con, ann.id)
    assert db.add_vote(con, item.id, ann.id, "a", {}) is True
    assert db.add_vote(con, item.id, ann.id, "b", {}) is False  # the UNIQUE (item, annotator) constraint
    assert [x.choice for x in db.votes(con)] == ["a"]
    with pytest.raises(sqlite3.IntegrityError):  # not assigned to this annotator: the foreign key refuses it
        unassigned = next(i.id for i in ITEMS if not db.is_assigned(con, i.id, ann.id))
        db.add_vote(con, unassigned, ann.id, "a", {})
    with pytest.raises(db.StoreError, match="rating"):
        db.add_vote(con, item.id, ann.id, "a", {"a_helpful": 8})
    assert db.undo_last(con, ann.id) == item.id and db.undo_last(con, ann.id) is None
    con.close()


@pytest.mark.parametrize("names, overlap, words", [
    (["ann", "ann"], 1, "distinct"), (["ann", ""], 1, "distinct"), (["ann"], 2, "--overlap"), (["ann"], 0, "--overlap"),
])
def test_create_refuses_bad_settings(tmp_path, names, overlap, words):
    with pytest.raises(db.StoreError, match=words):
        db.create(tmp_path / "p.sqlite", ITEMS, names, overlap, rate=False, guidelines="", source="t")
    assert not (tmp_path / "p.sqlite").exists()


def test_existing_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "p.sqlite"
    db.create(path, ITEMS, ["ann"], 1, rate=False, guidelines="", source="t")
    with pytest.raises(db.StoreError, match="already exists"):
        db.create(path, ITEMS, ["ann"], 1, rate=False, guidelines="", source="t")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(db.StoreError, match="not an rlhfkit labelling project"):
        db.open_project(other)
    with pytest.raises(db.StoreError, match="no such labelling project"):
        db.open_project(tmp_path / "missing.sqlite")
