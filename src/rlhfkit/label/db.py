"""The labelling project's storage: one SQLite file in WAL mode, one transaction per vote.

Tables (see SCHEMA): `items` (a prompt and two responses, each with where it came from),
`annotators` (a name and a random token that is their personal link), `assignments` (which
annotator labels which item, in which order, and whether the two responses are shown swapped),
`votes` (one row per (item, annotator) — the UNIQUE constraint is what makes a double submit or
a retried request count once), and `meta` (the project's settings and its secrets).

Durability: WAL with synchronous=FULL, and each vote is a single INSERT committed before the
server answers, so a vote the annotator saw accepted survives `kill -9` and a power cut; a
vote not yet committed is not half-written (SQLite's atomic commit). Writers take the lock with
BEGIN IMMEDIATE and wait up to BUSY_TIMEOUT_S for each other instead of failing.

Every function takes a connection from `connect()`: one per request (sqlite3 connections must
not be shared across threads), closed by the caller.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_S = 30.0
SCALES = ("helpful", "harmless", "honest")
CHOICES = ("a", "b", "tie", "both_bad")
RATING_RANGE = (1, 7)

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items(
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL, response_a TEXT NOT NULL, response_b TEXT NOT NULL,
    origin_a TEXT, origin_b TEXT,          -- e.g. 'sft' / 'ppo': what the report compares
    source_line INTEGER                    -- 1-based line of the source file it came from
);
CREATE TABLE annotators(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token TEXT NOT NULL UNIQUE);
CREATE TABLE assignments(
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    position REAL NOT NULL,                -- a random key: the order this annotator sees the items in
    flip INTEGER NOT NULL CHECK (flip IN (0, 1)),  -- 1: response b is shown on the left
    PRIMARY KEY (item_id, annotator_id)
);
CREATE TABLE votes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL, annotator_id INTEGER NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    a_helpful INTEGER, a_harmless INTEGER, a_honest INTEGER,
    b_helpful INTEGER, b_harmless INTEGER, b_honest INTEGER,
    created REAL NOT NULL,
    UNIQUE (item_id, annotator_id),
    FOREIGN KEY (item_id, annotator_id) REFERENCES assignments(item_id, annotator_id)
);
"""


class StoreError(ValueError):
    """The project file is missing, not a labelling project, or asked something impossible."""


@dataclass(frozen=True)
class Item:
    id: int
    prompt: str
    response_a: str
    response_b: str
    origin_a: str | None = None
    origin_b: str | None = None
    source_line: int | None = None


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    token: str


@dataclass(frozen=True)
class Vote:
    item_id: int
    annotator: str
    choice: str
    ratings: dict[str, int | None]  # "a_helpful" ... "b_honest"


RATING_COLUMNS = tuple(f"{side}_{scale}" for side in ("a", "b") for scale in SCALES)


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on."""
    con = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = FULL")
    return con


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on any error: a write is all or nothing."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def create(path: Path, items: Sequence[Item], annotators: Sequence[str], overlap: int, *, rate: bool,
           guidelines: str, source: str, seed: int = 0) -> None:
    """Write a new project: items, annotators with fresh tokens, each item assigned to `overlap` of them."""
    if path.exists():
        raise StoreError(f"{path} already exists: serve it as it is (leave out the source options), or choose --db")
    names = [n.strip() for n in annotators]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise StoreError(f"--annotators must be distinct, non-empty names, got {','.join(annotators)!r}")
    if not 1 <= overlap <= len(names):
        raise StoreError(f"--overlap must be between 1 and the number of annotators ({len(names)}), got {overlap}")
    if not items:
        raise StoreError("the source has no items to label")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    rng = random.Random(seed)
    with closing(connect(tmp)) as con:
        con.execute("PRAGMA journal_mode = WAL")
        with transaction(con):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            meta = {"secret": secrets.token_hex(32), "admin_token": secrets.token_urlsafe(18), "rate": "1" if rate else "0",
                    "guidelines": guidelines, "source": source, "overlap": str(overlap)}
            con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(i + 1, it.prompt, it.response_a, it.response_b, it.origin_a, it.origin_b, it.source_line)
                             for i, it in enumerate(items)])
            con.executemany("INSERT INTO annotators(id, name, token) VALUES (?, ?, ?)",
                            [(j + 1, name, secrets.token_urlsafe(18)) for j, name in enumerate(names)])
            # Item i goes to annotators i, i+1, …, i+overlap−1 (mod n): every annotator gets an equal share
            # and every pair of neighbours shares items, so Cohen's κ is defined for them.
            rows = [(i + 1, (i + j) % len(names) + 1, rng.random(), rng.randint(0, 1))
                    for i in range(len(items)) for j in range(overlap)]
            con.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?)", rows)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tmp.replace(path)  # a project file exists only once it is complete


def open_project(path: Path) -> sqlite3.Connection:
    """Connect to an existing project, refusing anything else in one line."""
    if not path.is_file():
        raise StoreError(f"{path}: no such labelling project (rlhfkit label serve creates it from a source)")
    con = None
    try:
        con = connect(path)
        con.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    except sqlite3.DatabaseError as err:
        if con is not None:
            con.close()
        raise StoreError(f"{path}: not an rlhfkit labelling project ({err})") from None
    return con


def meta(con: sqlite3.Connection, key: str) -> str:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"labelling project has no '{key}' setting")
    return row[0]


def annotators(con: sqlite3.Connection) -> list[Annotator]:
    return [Annotator(*row) for row in con.execute("SELECT id, name, token FROM annotators ORDER BY id")]


def annotator_by_token(con: sqlite3.Connection, token: str) -> Annotator | None:
    row = con.execute("SELECT id, name, token FROM annotators WHERE token = ?", (token,)).fetchone()
    return None if row is None else Annotator(*row)


def item(con: sqlite3.Connection, item_id: int) -> Item | None:
    row = con.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    return None if row is None else Item(*row)


def next_assignment(con: sqlite3.Connection, annotator_id: int) -> tuple[Item, bool] | None:
    """The annotator's next unlabelled item and whether it is shown swapped; None when all are done."""
    row = con.execute(
        "SELECT s.item_id, s.flip FROM assignments s LEFT JOIN votes v "
        "ON v.item_id = s.item_id AND v.annotator_id = s.annotator_id "
        "WHERE s.annotator_id = ? AND v.id IS NULL ORDER BY s.position LIMIT 1", (annotator_id,)).fetchone()
    if row is None:
        return None
    return item(con, row[0]), bool(row[1])


def progress(con: sqlite3.Connection, annotator_id: int) -> tuple[int, int]:
    """(labelled, assigned) for one annotator."""
    done = con.execute("SELECT COUNT(*) FROM votes WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    total = con.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    return done, total


def is_assigned(con: sqlite3.Connection, item_id: int, annotator_id: int) -> bool:
    return con.execute("SELECT 1 FROM assignments WHERE item_id = ? AND annotator_id = ?",
                       (item_id, annotator_id)).fetchone() is not None


def add_vote(con: sqlite3.Connection, item_id: int, annotator_id: int, choice: str,
             ratings: dict[str, int | None]) -> bool:
    """Store one vote in one transaction; False when this annotator had already voted on the item."""
    if choice not in CHOICES:
        raise StoreError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    low, high = RATING_RANGE
    for key, value in ratings.items():
        if key not in RATING_COLUMNS or (value is not None and not low <= value <= high):
            raise StoreError(f"rating {key}={value!r} is not a {low}–{high} rating")
    values = [ratings.get(column) for column in RATING_COLUMNS]
    with transaction(con):
        cursor = con.execute(
            f"INSERT INTO votes(item_id, annotator_id, choice, {', '.join(RATING_COLUMNS)}, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id, annotator_id) DO NOTHING",
            (item_id, annotator_id, choice, *values, time.time()))
        return cursor.rowcount == 1


def undo_last(con: sqlite3.Connection, annotator_id: int) -> int | None:
    """Delete this annotator's most recent vote (only theirs); returns its item id, None if they have none."""
    with transaction(con):
        row = con.execute("SELECT id, item_id FROM votes WHERE annotator_id = ? ORDER BY id DESC LIMIT 1",
                          (annotator_id,)).fetchone()
        if row is None:
            return None
        con.execute("DELETE FROM votes WHERE id = ?", (row[0],))
        return row[1]


def votes(con: sqlite3.Connection) -> list[Vote]:
    """Every vote, in the items' own a/b orientation (never the display order)."""
    rows = con.execute(f"SELECT v.item_id, a.name, v.choice, {', '.join('v.' + c for c in RATING_COLUMNS)} "
                       "FROM votes v JOIN annotators a ON a.id = v.annotator_id ORDER BY v.id")
    return [Vote(r[0], r[1], r[2], dict(zip(RATING_COLUMNS, r[3:]))) for r in rows]


def items(con: sqlite3.Connection) -> list[Item]:
    return [Item(*row) for row in con.execute("SELECT * FROM items ORDER BY id")]


def assignment_counts(con: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """{annotator name: (labelled, assigned)} for the admin page."""
    rows = con.execute("SELECT a.name, COUNT(v.id), COUNT(*) FROM assignments s JOIN annotators a ON a.id = s.annotator_id "
                       "LEFT JOIN votes v ON v.item_id = s.item_id AND v.annotator_id = s.annotator_id "
                       "GROUP BY a.id ORDER BY a.id")
    return {name: (done, total) for name, done, total in rows}
