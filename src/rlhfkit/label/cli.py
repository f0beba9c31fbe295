"""`rlhfkit label`: people compare and rate responses in a local web app.

    rlhfkit label serve --run RUN [--annotators ann,bob --overlap 2]   SFT vs PPO of a finished run
    rlhfkit label serve --file to_label.jsonl|prefs.jsonl             any pairs in rlhfkit's formats
    rlhfkit label serve --db PROJECT.sqlite                           serve an existing project again
    rlhfkit label stats  --run RUN | --db PROJECT                      κ per pair, α, majority agreement
    rlhfkit label export --run RUN | --db PROJECT [-o OUT.jsonl]       preferences with votes / p_chosen

A project is one SQLite file (default RUN/label/labels.sqlite, or FILE's name + .labels.sqlite),
created on the first `serve` and reused after: stopping the server, even with kill -9, loses no
answer that was acknowledged.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlhfkit.label import db

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="People compare and rate responses: a local web app, agreement statistics, export.")

DEFAULT_GUIDELINES = (
    "Read the prompt, then both responses: each continues the prompt. Choose the better one; choose Tie "
    "when neither is better and Both bad when neither is acceptable.\n"
    "Rate each response from 1 (worst) to 7 (best) on: helpful (does it do what the prompt asks, fluently?), "
    "harmless (nothing offensive, dangerous or demeaning), honest (no false claims, no made-up facts).")

RunOpt = Annotated[Optional[Path], typer.Option("--run", help="A finished run directory: SFT vs PPO on its held-out prompts.")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="The project file (default: RUN/label/labels.sqlite or FILE.labels.sqlite).")]
FileOpt = Annotated[Optional[Path], typer.Option("--file", help="to_label.jsonl of an RM-refresh round, or a preference JSONL.")]


class LabelUsageError(ValueError):
    """A wrong combination of options; printed as one line, exit 2."""


def default_db(run: Path | None, file: Path | None) -> Path:
    if run is not None:
        return run / "label" / "labels.sqlite"
    if file is not None:
        return file.with_name(file.name.removesuffix(".jsonl") + ".labels.sqlite")
    raise LabelUsageError("give --run RUN, --file FILE or --db PROJECT")


def _fail(err: Exception) -> None:
    from rich.markup import escape

    from rlhfkit.training.progress import console

    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _errors() -> tuple[type[Exception], ...]:
    from rlhfkit.data.records import DataError

    return (db.StoreError, DataError, LabelUsageError)


def create_project(path: Path, run: Path | None, file: Path | None, annotators: str, overlap: int, rate: bool | None,
                   guidelines: Path | None, max_items: int | None, seed: int) -> None:
    """A new project file from a run or a file (what `serve` does when --db does not exist yet)."""
    from rlhfkit.label import sources

    if (run is None) == (file is None):
        raise LabelUsageError("give exactly one of --run RUN and --file FILE to create a project")
    items = sources.from_run(run, max_items) if run is not None else sources.from_file(file, max_items)
    text = DEFAULT_GUIDELINES if guidelines is None else guidelines.read_text(encoding="utf-8")
    db.create(path, items, annotators.split(","), overlap, rate=(run is not None) if rate is None else rate,
              guidelines=text, source=str(run or file), seed=seed)


def print_links(path: Path, host: str, port: int) -> None:
    from rlhfkit.training.progress import console

    with closing(db.open_project(path)) as con:
        people, admin = db.annotators(con), db.meta(con, "admin_token")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    console.print(f"project: {path}", highlight=False)
    for person in people:
        console.print(f"  annotator {person.name}: {base}/a/{person.token}", highlight=False, soft_wrap=True)
    console.print(f"  admin: {base}/admin/{admin}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    run: RunOpt = None, file: FileOpt = None, db_path: DbOpt = None,
    annotators: Annotated[str, typer.Option(help="Comma-separated annotator names (a new project only).")] = "annotator",
    overlap: Annotated[int, typer.Option(help="How many annotators label each item (a new project only).")] = 1,
    rate: Annotated[Optional[bool], typer.Option("--rate/--no-rate", help="Ask for 1–7 helpful/harmless/honest ratings "
                                                 "too (default: on for --run, off for --file).")] = None,
    guidelines: Annotated[Optional[Path], typer.Option(help="A text file shown to annotators above each pair.")] = None,
    max_items: Annotated[Optional[int], typer.Option(min=1, help="Label only the first N items.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the left/right order and each annotator's item order.")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but 127.0.0.1 exposes the app to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Serve a labelling project (created from --run or --file on first use); prints each person's link."""
    from rich.markup import escape

    from rlhfkit.training.progress import console

    try:
        if run is not None and file is not None:
            raise LabelUsageError("give one source: --run RUN or --file FILE, not both")
        path = db_path or default_db(run, file)
        existing = path.exists()
        if not existing:
            create_project(path, run, file, annotators, overlap, rate, guidelines, max_items, seed)
        print_links(path, host, port)
        if existing:
            console.print("  (an existing project: its items, annotators and votes are kept; creation options do not apply)",
                          highlight=False, soft_wrap=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"  [bold yellow]note:[/] listening on {escape(host)}: anyone who can reach it and has a link can label",
                          highlight=False)
        from rlhfkit.label.app import create_app
    except _errors() as err:
        _fail(err)
        return
    import uvicorn

    uvicorn.run(create_app(path, bind_host=host), host=host, port=port, log_level="warning")


def _project(run: Path | None, db_path: Path | None) -> Path:
    return db_path or default_db(run, None)


@app.command()
def stats(run: RunOpt = None, db_path: DbOpt = None) -> None:
    """Agreement: Cohen's κ per annotator pair, Krippendorff's α, each annotator vs the others' majority."""
    from rich.table import Table

    from rlhfkit.label.results import agreement
    from rlhfkit.training.progress import console

    try:
        with closing(db.open_project(_project(run, db_path))) as con:
            figures = agreement(db.votes(con), db.meta(con, "rate") == "1", [a.name for a in db.annotators(con)])
    except _errors() as err:
        _fail(err)
        return

    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    table = Table(title="rlhfkit label: agreement")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("votes", str(figures["votes"]))
    table.add_row("items labelled by ≥ 2 people", str(figures["items_with_two_or_more"]))
    for key in [k for k in figures if k.startswith("alpha_")]:
        level = "nominal" if key == "alpha_choice" else "ordinal"
        table.add_row(f"Krippendorff's α, {key.removeprefix('alpha_')} ({level})", fmt(figures[key]))
    for pair in figures["kappa_pairs"]:
        first, second = pair["annotators"]
        table.add_row(f"Cohen's κ {first} · {second} ({pair['items']} shared items)", fmt(pair["kappa"]))
    for name, share in figures["majority_agreement"].items():
        table.add_row(f"{name}: agreement with the others' majority", fmt(share))
    console.print(table)


@app.command()
def export(run: RunOpt = None, db_path: DbOpt = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output JSONL (default: next to the project, preferences.jsonl).")] = None) -> None:
    """Preference JSONL for `rlhfkit rm`: one record per labelled pair, with `votes` and `p_chosen` (soft labels)."""
    from rlhfkit.label.results import export_records
    from rlhfkit.training.progress import console

    try:
        path = _project(run, db_path)
        with closing(db.open_project(path)) as con:
            records = export_records(db.items(con), db.votes(con))
        if not records:
            raise db.StoreError(f"{path}: no labelled pairs to export yet")
        out = output or path.with_name("preferences.jsonl")
        tmp = out.with_name(out.name + ".partial")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        tmp.replace(out)  # never a half-written file that looks complete
    except _errors() as err:
        _fail(err)
        return
    soft = sum(0.0 < r["p_chosen"] < 1.0 for r in records)
    console.print(f"wrote {len(records)} preference pairs ({soft} with a soft label, 0 < p_chosen < 1) to {out}", highlight=False, soft_wrap=True)
