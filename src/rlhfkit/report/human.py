"""report.html's "Human evaluation" section: what people said about SFT vs PPO in `rlhfkit label`.

Shown when RUN/label/labels.sqlite exists (`rlhfkit label serve --run RUN` creates it). The win
rate of PPO over SFT counts a tie or "both bad" as ½, with a Wilson 95 % interval; each
helpful / harmless / honest rating is a mean with mean ± 1.96·s/√n. The unit is the vote: an
item labelled by three people counts three times, so with several annotators per item the
intervals are somewhat narrower than the items alone would give (said on the page).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from html import escape
from pathlib import Path

PROJECT = Path("label") / "labels.sqlite"


def has_labels(run_dir: Path) -> bool:
    return (run_dir / PROJECT).is_file()


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _interval(pair, digits: int = 3) -> str:
    if not pair or pair[0] is None:
        return "–"
    return f"{_num(pair[0], digits)} – {_num(pair[1], digits)}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i else ""}">{c}</td>' for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def human_evaluation_section(run_dir: Path) -> str:
    """The section's HTML (every string from the project escaped)."""
    from rlhfkit.label import db
    from rlhfkit.label.results import agreement, human_evaluation

    with closing(db.open_project(run_dir / PROJECT)) as con:
        items, votes, people = db.items(con), db.votes(con), db.annotators(con)
        rate = db.meta(con, "rate") == "1"
    human = human_evaluation(items, votes)
    if human is None:
        return ('<p class="missing">No votes yet in label/labels.sqlite: label with '
                f"<code>rlhfkit label serve --run {escape(str(run_dir))}</code>.</p>")
    figures = agreement(votes, rate, [p.name for p in people])
    c = human["choices"]
    parts = [
        f'<p class="note">{human["votes"]} votes by {human["annotators"]} annotator(s) on {human["items"]} of '
        f"{len(items)} held-out prompts, each comparing the SFT and the PPO response (shown in random order). "
        "Unit: the vote; 95 % intervals (Wilson for the win rate, mean ± 1.96·s/√n for ratings).</p>",
        _table(["people's verdict", "value", "95 % interval"], [
            ("win rate of PPO over SFT (tie, both bad = ½)", _num(human["win_rate_ppo"]), _interval(human["win_rate_interval"])),
            ("PPO better / SFT better / tie / both bad", f'{c["ppo"]} / {c["sft"]} / {c["tie"]} / {c["both_bad"]}', ""),
        ]),
    ]
    ratings = human["ratings"]
    if ratings:
        rows = []
        for scale in db.SCALES:
            sft, ppo = ratings.get(f"sft_{scale}"), ratings.get(f"ppo_{scale}")
            cell = lambda r: "–" if r is None else f'{_num(r["mean"], 2)} <span class="note">[{_interval(r["interval"], 2)}]</span>'
            change = "–" if sft is None or ppo is None else f'{ppo["mean"] - sft["mean"]:+.2f}'
            rows.append((escape(scale), cell(sft), cell(ppo), change))
        parts.append("<h3>Ratings, 1 (worst) to 7 (best)</h3>")
        parts.append(_table(["scale", "SFT mean [95 % interval]", "PPO mean [95 % interval]", "change"], rows))
    agree = [("Krippendorff's α, choice (nominal)", _num(figures["alpha_choice"]))]
    agree += [(f"Krippendorff's α, {escape(s)} (ordinal)", _num(figures.get(f"alpha_{s}"))) for s in db.SCALES if rate]
    agree += [(f"Cohen's κ, {escape(p['annotators'][0])} · {escape(p['annotators'][1])} ({p['items']} shared)",
               _num(p["kappa"])) for p in figures["kappa_pairs"]]
    parts.append("<h3>Agreement between annotators</h3>")
    parts.append(_table(["figure", "value"], agree))
    return "".join(parts)
