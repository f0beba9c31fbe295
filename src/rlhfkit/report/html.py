"""`report.html`: one self-contained page per run, to look at instead of reading the logs.

    write_report(run_dir)   reads RUN/summary.json, RUN/*/metrics.jsonl, RUN/eval/*, RUN/config.yaml,
                            RUN/label/labels.sqlite (people's votes, when there are any: report/human.py)
                            writes RUN/report.html and PNGs in RUN/plots/, returns the html path
    report_command(run_dir) the same for `rlhfkit report RUN_DIR`: prints the path

The page works on partial runs (a missing stage says "stage not run"), never raises on missing
or odd metric values, has inline CSS, no JavaScript and no network resources, and links its
plots relatively (`plots/x.png`) so it opens from the run directory. All text that comes from
data (responses are model output) is escaped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any

from rlhfkit.metric_names import M
from rlhfkit.report import human, plots
from rlhfkit.report.perf import perf_table
from rlhfkit.report.plots import events, series, to_float

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
STAGES = ("sft", "rm", "ppo")
MAX_TEXT = 1200  # characters of a prompt/response shown in a table cell
N_EVAL_SAMPLES = 12
NOT_PLOTTED = {"stage", "step", "time", "event", "diagnostic"}

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:18px 26px 60px}
h1{margin:.2em 0 0;font-size:1.6em} h2{margin-top:1.8em;border-bottom:2px solid #dde1e8;padding-bottom:.2em}
h3{margin:1.2em 0 .4em;font-size:1.05em}
.sub{color:#5b6475;margin:.2em 0 1em}
.note{color:#5b6475;font-size:.92em;max-width:60em}
.missing{color:#8a6d00;background:#fff8e0;border:1px solid #f0dfa0;padding:.5em .8em;border-radius:4px;display:inline-block}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:.4em 0}
th,td{border:1px solid #dde1e8;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.headline td:first-child{color:#3c4456} table.headline td.num{font-weight:600}
table.samples{width:100%;table-layout:fixed} table.samples td{white-space:pre-wrap;word-wrap:break-word}
table.samples td.prompt{color:#3c4456;background:#fafbfc}
.score{display:block;margin-top:.3em;font-size:.85em;color:#5b6475;white-space:nowrap}
.better{color:#1a7f37;font-weight:600} .worse{color:#b42318;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:10px;margin:.6em 0}
.grid img,.plot{background:#fff;border:1px solid #dde1e8;border-radius:4px;max-width:100%;height:auto}
ul.warnings li{color:#8a2a0a;margin:.25em 0}
details{margin:.6em 0;background:#fff;border:1px solid #dde1e8;border-radius:4px;padding:.4em .8em}
summary{cursor:pointer;font-weight:600}
pre{font-size:.82em;overflow-x:auto;white-space:pre-wrap;margin:.5em 0}
"""


# =========================================================================== reading
class _Run:
    """Everything the report reads, loaded leniently; problems become notes, never exceptions."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.notes: list[str] = []  # problems found while reading or drawing, shown under Warnings
        summary = self._json(run_dir / "summary.json")
        self.summary = summary if isinstance(summary, dict) else {}
        self.metrics = {stage: self._jsonl(run_dir / stage / "metrics.jsonl") for stage in STAGES}
        self.samples = self._jsonl(run_dir / "ppo" / "samples.jsonl")
        self.before = self._jsonl(run_dir / "eval" / "before.jsonl")
        self.after = self._jsonl(run_dir / "eval" / "after.jsonl")
        evaluation = self._json(run_dir / "eval" / "metrics.json")
        if not isinstance(evaluation, dict):
            evaluation = self.summary.get("evaluation")
        self.eval = evaluation if isinstance(evaluation, dict) else {}

    def _json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as err:
            self.notes.append(f"could not read {path.relative_to(self.dir)}: {err}")
            return None

    def _jsonl(self, path: Path) -> list[dict]:
        if not path.is_file():
            return []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            self.notes.append(f"could not read {path.relative_to(self.dir)}: {err}")
            return []
        records, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
        if bad > 1:  # one torn last line after a crash is normal; more is worth a note
            self.notes.append(f"{path.relative_to(self.dir)}: {bad} unreadable lines skipped")
        return records

    def stage_summary(self, stage: str) -> dict:
        stages = self.summary.get("stages")
        value = stages.get(stage) if isinstance(stages, dict) else None
        return value if isinstance(value, dict) else {}

    def stage_ran(self, stage: str) -> bool:
        return bool(self.metrics[stage]) or bool(self.stage_summary(stage)) or (self.dir / stage).is_dir()


def _last(records: list[dict], key: str) -> float | None:
    xs, ys = series(records, key)
    if ys:
        return ys[-1]
    for record in reversed(records):  # records without a usable step
        value = to_float(record.get(key))
        if value is not None:
            return value
    return None


def _first(records: list[dict], key: str) -> float | None:
    xs, ys = series(records, key)
    return ys[0] if ys else None


def _last_values(records: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for record in records:
        for key, value in record.items():
            if key not in NOT_PLOTTED and (to_float(value) is not None or isinstance(value, str)):
                out[key] = value
    return out


# =========================================================================== formatting
def _fmt(value: Any, kind: str = "num") -> str:
    """Escaped display text; "—" for missing; non-finite strings ("nan") shown as they are."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return escape(str(value))
    number = to_float(value)
    if number is None:
        if isinstance(value, (int, float)):  # a float nan/inf that slipped through
            return escape(str(value))
        return escape(str(value)) if isinstance(value, str) else escape(json.dumps(value, default=str)[:200])
    if kind == "pct":
        return f"{100 * number:.1f}%"
    if kind == "time":
        return _duration(number)
    if isinstance(value, int) or (number.is_integer() and abs(number) < 1e9 and not isinstance(value, float)):
        return str(int(number))
    return f"{number:.4g}"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _change(before: Any, after: Any) -> str:
    b, a = to_float(before), to_float(after)
    if b is None or a is None:
        return "—"
    return f"{a - b:+.4g}"


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = text if isinstance(text, str) else json.dumps(text, default=str)
    if len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters]"
    return escape(text)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "", num_from: int = 1) -> str:
    """Cells are already-escaped html; columns from `num_from` on are right-aligned numbers."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i >= num_from else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_details(title: str, values: dict[str, Any]) -> str:
    if not values:
        return ""
    rows = [(escape(str(k)), _fmt(v)) for k, v in sorted(values.items(), key=lambda kv: str(kv[0]))]
    return f"<details><summary>{escape(title)}</summary>{_table(['metric', 'value'], rows)}</details>"


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


# =========================================================================== plots
class _Plotter:
    """Draws into RUN/plots/, returns <img> tags; a failing plot becomes a note, not an exception."""

    def __init__(self, run: _Run):
        self.run = run
        self.dir = run.dir / PLOTS_DIR

    def img(self, name: str, draw: Callable[[Path], Path | None], alt: str) -> str:
        path = self.dir / f"{name}.png"
        try:
            made = draw(path)
        except Exception as err:  # noqa: BLE001 - a broken plot must not cost the whole report
            self.run.notes.append(f"plot {name} failed: {type(err).__name__}: {err}")
            made = None
        if made is None:
            path.unlink(missing_ok=True)  # no stale image from an earlier report
            return ""
        return f'<img class="plot" src="{PLOTS_DIR}/{escape(path.name)}" alt="{escape(alt)}" loading="lazy">'


def _grid(images: Iterable[str]) -> str:
    images = [i for i in images if i]
    return f'<div class="grid">{"".join(images)}</div>' if images else ""


# =========================================================================== sections
def _headline(run: _Run) -> str:
    sft, rm, ppo = (run.stage_summary(s) for s in STAGES)
    ev = run.eval
    before = ev.get("before") if isinstance(ev.get("before"), dict) else {}
    after = ev.get("after") if isinstance(ev.get("after"), dict) else {}
    rows: list[tuple[str, str]] = []

    sft_loss = to_float(sft.get("eval/loss"))
    if sft_loss is None:
        sft_loss = _last(run.metrics["sft"], "eval/loss")
    sft_start = to_float(sft.get("initial_eval/loss"))
    if sft_start is None:
        sft_start = _first(run.metrics["sft"], "eval/loss")
    text = _fmt(sft_loss)
    if sft_loss is not None and sft_start is not None and sft_start != sft_loss:
        text += f' <span class="note">(from {_fmt(sft_start)})</span>'
    rows.append(("SFT held-out loss", text))

    rm_acc = to_float(rm.get("eval/accuracy"))
    if rm_acc is None:
        rm_acc = _last(run.metrics["rm"], "eval/accuracy")
    rows.append(("Reward model held-out accuracy", _fmt(rm_acc, "pct")))
    rows.append(("Reward model agreement with gold", _fmt(ev.get("rm_gold_accuracy"), "pct")))

    for label, key in (("Gold score SFT → PPO", "gold_mean"), ("Proxy (RM) score SFT → PPO", "proxy_mean")):
        b, a = before.get(key), after.get(key)
        if b is None and a is None and key == "proxy_mean":
            continue
        text = f"{_fmt(b)} → {_fmt(a)}" if (b is not None or a is not None) else "—"
        if to_float(a) is not None and to_float(b) is not None:
            diff = to_float(a) - to_float(b)
            text += f' <span class="{"better" if diff > 0 else "worse"}">({diff:+.4g})</span>'
        rows.append((label, text))

    judge = ev.get("win_rate_judge")
    rows.append((f"Win rate PPO vs SFT{f' ({judge} judge)' if judge else ''}", _fmt(ev.get("win_rate"), "pct")))

    kl, kl_note = to_float(after.get("kl")), "held-out prompts"
    if kl is None:
        kl, kl_note = to_float(ppo.get(M.KL)), "last PPO iteration"
    if kl is None:
        kl, kl_note = _last(run.metrics["ppo"], M.KL), "last PPO iteration"
    rows.append(("KL(PPO ‖ SFT)", _fmt(kl) + (f' <span class="note">({kl_note})</span>' if kl is not None else "")))

    wall = run.summary.get("wall_time")
    if isinstance(wall, dict) and wall:
        parts = [(str(k), to_float(v)) for k, v in wall.items()]
        total = sum(v for _, v in parts if v is not None)
        text = " · ".join(f"{escape(k)} {_fmt(v, 'time')}" for k, v in parts) + f" · <b>total {_duration(total)}</b>"
    else:
        text = "—"
    rows.append(("Wall time", text))
    return _table(["", "value"], [(escape(k), v) for k, v in rows], cls="headline")


def _stage_missing(run: _Run, stage: str, name: str) -> str | None:
    if not run.stage_ran(stage):
        return _missing(f"{name}: stage not run.")
    if not run.metrics[stage]:
        return _missing(f"{name}: no metrics logged ({stage}/metrics.jsonl is missing or empty).")
    return None


def _sft(run: _Run, plot: _Plotter) -> str:
    missing = _stage_missing(run, "sft", "SFT")
    if missing:
        return missing
    records = run.metrics["sft"]
    img = plot.img("sft_loss", lambda p: plots.plot_lines(
        p, "SFT loss (completion tokens)", "optimiser step", "cross-entropy (nats/token)",
        [("train loss", series(records, "train/loss")), ("held-out loss", series(records, "eval/loss"))],
        events(records)), "SFT train and held-out loss")
    parts = [_grid([img]) or _missing("SFT: no loss values to plot yet.")]
    parts.append(_kv_details("final SFT metrics", run.stage_summary("sft") or _last_values(records)))
    return "".join(parts)


def _rm(run: _Run, plot: _Plotter) -> str:
    missing = _stage_missing(run, "rm", "Reward model")
    if missing:
        return missing
    records = run.metrics["rm"]
    marks = events(records)
    acc = plot.img("rm_accuracy", lambda p: plots.plot_lines(
        p, "Reward model pairwise accuracy", "optimiser step", "accuracy (chosen > rejected)",
        [("train", series(records, "train/accuracy")), ("held-out", series(records, "eval/accuracy"))], marks),
        "reward model accuracy")
    loss = plot.img("rm_loss", lambda p: plots.plot_lines(
        p, "Reward model loss (Bradley–Terry)", "optimiser step", "loss",
        [("train", series(records, "train/loss")), ("held-out", series(records, "eval/loss"))], marks),
        "reward model loss")
    margin = plot.img("rm_margin", lambda p: plots.plot_lines(
        p, "Reward margin r(chosen) − r(rejected)", "optimiser step", "mean margin",
        [("train", series(records, "train/margin")), ("held-out", series(records, "eval/margin"))], marks),
        "reward model margin")
    parts = [_grid([acc, loss, margin]) or _missing("Reward model: no values to plot yet.")]
    parts.append(_kv_details("final reward-model metrics", run.stage_summary("rm") or _last_values(records)))
    return "".join(parts)


def _ppo(run: _Run, plot: _Plotter) -> str:
    missing = _stage_missing(run, "ppo", "PPO")
    if missing:
        return missing
    r = run.metrics["ppo"]
    marks = events(r)
    x = "PPO iteration"
    images = [
        plot.img("ppo_scores", lambda p: plots.plot_twin(
            p, "Reward: proxy (RM) and gold", x, ("proxy score", "proxy score (objective/scores)", series(r, M.SCORES)),
            ("gold score", "gold score", series(r, M.GOLD_SCORE)), marks), "proxy and gold score"),
        plot.img("ppo_eval_scores", lambda p: plots.plot_twin(  # only with ppo.eval.every
            p, "Held-out prompts: proxy and gold score", x,
            ("proxy score, held-out", "proxy score (eval/proxy_score)", series(r, M.EVAL_PROXY_SCORE)),
            ("gold score, held-out", "gold score (eval/gold_score)", series(r, M.EVAL_GOLD_SCORE)), marks),
            "proxy and gold score on held-out prompts during PPO"),
        plot.img("ppo_kl", lambda p: plots.plot_lines(
            p, "KL(policy ‖ reference)", x, "nats per response",
            [(f"{M.KL} (training rollouts)", series(r, M.KL)), (f"{M.EVAL_KL} (held-out, exact)", series(r, M.EVAL_KL))],
            marks), "KL to the reference"),
        plot.img("ppo_kl_coef", lambda p: plots.plot_lines(
            p, "KL coefficient β", x, "β", [("kl_coef", series(r, "kl_coef"))], marks), "KL coefficient"),
        plot.img("ppo_entropy", lambda p: plots.plot_lines(
            p, "Policy entropy", x, "nats per response", [(M.ENTROPY_SEQ, series(r, M.ENTROPY_SEQ))], marks),
            "policy entropy"),
        plot.img("ppo_length", lambda p: plots.plot_twin(
            p, "Response length", x, ("length", "tokens", series(r, M.RESPONSE_LENGTH)),
            ("ended with EOS", "fraction ended with EOS", series(r, M.EOS_FRACTION)), marks), "response length"),
        plot.img("ppo_timing", lambda p: plots.plot_timing(p, r, marks), "time per iteration"),
        plot.img("ppo_rm_shift", lambda p: plots.plot_twin(
            p, "Reward model under policy shift", x,
            ("ensemble disagreement", "std of member scores", _nonzero(series(r, M.ENSEMBLE_DISAGREEMENT))),
            ("RM accuracy on fresh policy pairs (before each refresh)", "accuracy",
             series(r, "refresh/rm_accuracy_on_policy_pairs")), marks),
            "ensemble disagreement and the reward model's accuracy on the policy's own samples"),
        plot.img("ppo_losses", lambda p: plots.plot_twin(
            p, "PPO losses", x, ("policy loss", "policy loss", series(r, M.POLICY_LOSS)),
            ("value loss", "value loss", series(r, M.VALUE_LOSS)), marks), "PPO losses"),
        plot.img("ppo_clip", lambda p: plots.plot_twin(
            p, "Update size: clip fraction and approx. KL", x,
            ("policy clip fraction", "clip fraction", series(r, M.CLIPFRAC)),
            ("approx KL(old ‖ new)", "approx KL per token", series(r, M.APPROX_KL)), marks), "PPO update size"),
    ]
    parts = [_grid(images) or _missing("PPO: no values to plot yet.")]
    iterations = [s for s in (to_float(rec.get("step")) for rec in r if M.KL in rec) if s is not None]
    if iterations:
        parts.append(f'<p class="note">{len(iterations)} iterations logged (last: {_fmt(max(iterations))}).</p>')
    if marks:
        listed = ", ".join(f"{escape(text)} at iteration {_fmt(step)}" for step, text in marks[:30])
        more = f" and {len(marks) - 30} more" if len(marks) > 30 else ""
        parts.append(f'<p class="note">Events (dashed lines): {listed}{more}.</p>')
    parts.append(perf_table(r))
    parts.append(_kv_details("final PPO metrics", run.stage_summary("ppo") or _last_values(r)))
    return "".join(parts)


def _nonzero(data: tuple[list[float], list[float]]) -> tuple[list[float], list[float]]:
    """The series, or an empty one when every value is 0 (a single reward model has no disagreement)."""
    return data if any(y != 0 for y in data[1]) else ([], [])


def _overoptimisation(run: _Run, plot: _Plotter) -> str:
    if not run.metrics["ppo"]:
        return _missing("PPO was not run: nothing to show.")
    img = plot.img("overoptimisation", lambda p: plots.plot_overoptimisation(p, run.metrics["ppo"]),
                   "gold and proxy score against square root of KL")
    if not img:
        return _missing("No PPO iteration logged both a KL and a score yet.")
    has_gold = bool(series(run.metrics["ppo"], M.GOLD_SCORE)[0])
    text = ("Each dot is one PPO iteration, placed by how far the policy has moved from the SFT model "
            "(x = √KL). Look at the two curves together: if the gold score peaks and then falls while the "
            "proxy score keeps rising, the policy is exploiting the reward model (reward hacking, as in "
            "Gao et al. 2022, <i>Scaling Laws for Reward Model Overoptimization</i>).")
    if not has_gold:
        text += " This task has no gold judge, so only the proxy score is shown."
    return _grid([img]) + f'<p class="note">{text}</p>'


EVAL_ORDER = ("gold_mean", "proxy_mean", "kl", "length", "eos_fraction", "distinct_1", "distinct_2", "ref_perplexity")
EVAL_NAMES = {"gold_mean": "gold score (mean)", "proxy_mean": "proxy score (mean)", "kl": "KL to SFT (exact, per response)",
              "length": "response length (tokens)", "eos_fraction": "ended with EOS", "distinct_1": "distinct-1",
              "distinct_2": "distinct-2", "ref_perplexity": "perplexity under SFT model"}


def _score_line(record: dict, compare: dict | None = None) -> str:
    """ "gold 0.41 · proxy 1.2" under a response; with `compare`, gold is green/red when better/worse."""
    parts = []
    for name in ("gold", "proxy"):
        if name not in record:
            continue
        text = f"{name} {_fmt(record.get(name))}"
        if name == "gold" and compare is not None:
            a, b = to_float(record.get("gold")), to_float(compare.get("gold"))
            if a is not None and b is not None and a != b:
                text = f'<span class="{"better" if a > b else "worse"}">{text}</span>'
        parts.append(text)
    return f'<span class="score">{" · ".join(parts)}</span>' if parts else ""


def _evaluation(run: _Run) -> str:
    ev = run.eval
    before = ev.get("before") if isinstance(ev.get("before"), dict) else {}
    after = ev.get("after") if isinstance(ev.get("after"), dict) else {}
    if not (before or after or run.before or run.after):
        return _missing("Evaluation not run (it follows PPO).")
    parts = []
    if before or after:
        keys = [k for k in EVAL_ORDER if k in before or k in after]
        keys += sorted(str(k) for k in {*before, *after} if k not in EVAL_ORDER)
        rows = [(escape(EVAL_NAMES.get(k, k)), _fmt(before.get(k)), _fmt(after.get(k)), _change(before.get(k), after.get(k)))
                for k in keys]
        parts.append(_table(["held-out prompts", "SFT (before)", "PPO (after)", "change"], rows))
        extra = [(escape(k), _fmt(v, "pct" if k in ("win_rate", "rm_gold_accuracy") else "num"))
                 for k, v in ev.items() if k not in ("before", "after") and not isinstance(v, (dict, list))]
        if extra:
            parts.append(_table(["", "value"], extra))
    if run.before or run.after:
        n = min(N_EVAL_SAMPLES, max(len(run.before), len(run.after)))
        rows = []
        for i in range(n):
            b = run.before[i] if i < len(run.before) else {}
            a = run.after[i] if i < len(run.after) else {}
            prompt = b.get("prompt", a.get("prompt", ""))
            cells = [f'<td class="prompt">{_clip(prompt)}</td>']
            for rec, compare in ((b, None), (a, b)):
                if rec:
                    cells.append(f"<td>{_clip(rec.get('response', ''))}{_score_line(rec, compare)}</td>")
                else:
                    cells.append("<td>—</td>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        head = "<tr><th style='width:26%'>prompt</th><th>SFT response</th><th>PPO response</th></tr>"
        parts.append(f"<h3>Same prompts, before and after (first {n})</h3>")
        parts.append(f'<table class="samples"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(parts)


def _latest_samples(run: _Run) -> str:
    if not run.samples:
        return _missing("No PPO samples logged (ppo/samples.jsonl missing or empty).")
    iterations = [to_float(s.get("iteration")) for s in run.samples]
    known = [i for i in iterations if i is not None]
    if known:
        last = max(known)
        chosen = [s for s, i in zip(run.samples, iterations) if i == last]
        title = f"iteration {_fmt(last)}"
    else:
        chosen, title = run.samples[-8:], "last lines"
    rows = [f'<tr><td class="prompt">{_clip(s.get("prompt", ""))}</td><td>{_clip(s.get("response", ""))}</td>'
            f'<td class="num">{_fmt(s.get("score"))}</td></tr>' for s in chosen]
    head = "<tr><th style='width:30%'>prompt</th><th>response</th><th style='width:6em'>score</th></tr>"
    return (f'<p class="note">{len(chosen)} samples from {title}.</p>'
            f'<table class="samples"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


def _warnings(run: _Run) -> str:
    items = []
    for stage in STAGES:
        last_step = None
        for record in run.metrics[stage]:
            step = to_float(record.get("step"))
            last_step = step if step is not None else last_step
            text = record.get("diagnostic")
            if text not in (None, ""):
                where = f"{stage}, step {_fmt(last_step)}" if last_step is not None else stage
                items.append(f"<li><b>{escape(where)}</b>: {_clip(text, 2000)}</li>")
    items += [f"<li><b>report</b>: {escape(note)}</li>" for note in run.notes]
    if not items:
        return '<p class="note">No diagnostics were logged.</p>'
    return f'<ul class="warnings">{"".join(items)}</ul>'


def _config(run: _Run) -> str:
    parts = []
    path = run.dir / "config.yaml"
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(f"<details><summary>config.yaml (resolved)</summary><pre>{escape(text)}</pre></details>")
        except OSError as err:
            parts.append(_missing(f"config.yaml could not be read: {err}"))
    else:
        parts.append(_missing("config.yaml not found."))
    task = run.summary.get("task")
    if task:
        text = json.dumps(task, indent=2, default=str)
        parts.append(f"<details><summary>task and annotation report</summary><pre>{escape(text)}</pre></details>")
    return "".join(parts)


# =========================================================================== page
def _guarded(run: _Run, name: str, build: Callable[[], str]) -> str:
    try:
        return build()
    except Exception as err:  # noqa: BLE001 - one broken section must not cost the whole report
        run.notes.append(f"section {name!r} could not be rendered: {type(err).__name__}: {err}")
        return _missing(f"This section could not be rendered ({type(err).__name__}); see Warnings.")


def write_report(run_dir: Path) -> Path:
    """Write RUN/report.html (+ RUN/plots/*.png) for a finished or partial run; return the html path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a directory")
    run = _Run(run_dir)
    plot = _Plotter(run)
    sections = [
        ("summary", "Summary", lambda: _headline(run)),
        ("sft", "1 · Supervised fine-tuning", lambda: _sft(run, plot)),
        ("rm", "2 · Reward model", lambda: _rm(run, plot)),
        ("ppo", "3 · PPO", lambda: _ppo(run, plot)),
        ("overopt", "Over-optimisation", lambda: _overoptimisation(run, plot)),
        ("eval", "Evaluation: SFT vs PPO on held-out prompts", lambda: _evaluation(run)),
        ("samples", "Latest PPO samples", lambda: _latest_samples(run)),
    ]
    if human.has_labels(run_dir):  # people labelled SFT vs PPO with `rlhfkit label serve --run`
        sections.insert(6, ("human", "Human evaluation: SFT vs PPO", lambda: human.human_evaluation_section(run_dir)))
    body = [f'<h2 id="{key}">{escape(title)}</h2>{_guarded(run, key, build)}' for key, title, build in sections]
    # Warnings last-but-one: it also lists problems met while building the sections above.
    body.append(f'<h2 id="warnings">Warnings</h2>{_guarded(run, "warnings", lambda: _warnings(run))}')
    body.append(f'<h2 id="config">Config</h2>{_guarded(run, "config", lambda: _config(run))}')
    name = run_dir.resolve().name or str(run_dir)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>rlhfkit report · {escape(name)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>rlhfkit run report</h1><p class=\"sub\">run directory <code>{escape(name)}</code> · "
        "SFT → reward model → PPO</p>" + "".join(body) + "</main></body></html>\n"
    )
    out = run_dir / REPORT_FILE
    tmp = out.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def report_command(run_dir: Path) -> Path:
    """`rlhfkit report RUN_DIR`: write the report and print its path.

    A run_dir that does not exist raises ConfigError (the CLI turns it into one red line, exit 2).
    """
    from rich.markup import escape as rich_escape

    from rlhfkit.config.load import ConfigError
    from rlhfkit.training.progress import console

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        why = "it is a file" if run_dir.exists() else "it does not exist"
        raise ConfigError(f"{run_dir} is not a run directory ({why})")
    if not any((run_dir / name).exists() for name in ("summary.json", "config.yaml", *STAGES, "eval")):
        raise ConfigError(f"{run_dir} does not look like an rlhfkit run directory (no summary.json, config.yaml or stage folders)")
    path = write_report(run_dir)
    console.print(f"report: [bold]{rich_escape(str(path))}[/]", highlight=False, soft_wrap=True)
    return path


__all__ = ["write_report", "report_command"]
