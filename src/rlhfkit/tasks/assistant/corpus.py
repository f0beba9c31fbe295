"""Real user turns for the assistant task: the English conversations of the PyPI package
`chatterbot-corpus` (21 topic files, about 2000 short dialogues), read locally, nothing downloaded.

- prompts: the first utterance of each conversation ("who invented the steam engine", "What is
  history?"), deduplicated case-insensitively, as chat records `{"messages": [{"role": "user", ...}]}`;
- SFT records: whole conversations as alternating user / assistant turns ending with the assistant
  (a trailing user turn is dropped), so multi-turn dialogues train every assistant turn.

Each conversation goes to one split by a hash of its first utterance (stable across runs and
machines): `sft`, `pref_prompts` (preference pairs), `ppo_prompts`, `eval_prompts` (held out from
everything else). The corpus's answers are a chatbot persona's, short and quirky; they teach the
chat format and tone, not facts.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import yaml

PACKAGE = "chatterbot_corpus"
INSTALL_HINT = "pip install 'rlhfkit[task]' (the chatterbot-corpus package)"
#: Fractions of conversations per split, in this order (the rest of 1.0 goes to the last).
SPLITS = (("sft", 0.4), ("pref_prompts", 0.3), ("ppo_prompts", 0.2), ("eval_prompts", 0.1))


class CorpusNotFound(RuntimeError):
    """chatterbot-corpus is not installed (or holds no English conversations)."""


def corpus_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusNotFound(f"the assistant task needs the chatterbot-corpus package: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "english"


def load_conversations(directory: Path | None = None) -> list[list[str]]:
    """Every conversation of every topic file, as a list of utterances (strings, stripped, non-empty)."""
    directory = directory or corpus_dir()
    conversations = []
    for path in sorted(Path(directory).glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [str(turn).strip() for turn in conversation if turn is not None and str(turn).strip()]
            if len(turns) >= 2:
                conversations.append(turns)
    if not conversations:
        raise CorpusNotFound(f"no English conversations under {directory}: {INSTALL_HINT}")
    return conversations


def _bucket(text: str) -> float:
    """A stable number in [0, 1) from the text."""
    return int.from_bytes(hashlib.sha256(text.lower().encode()).digest()[:8], "big") / 2**64


def split_conversations(conversations: list[list[str]]) -> dict[str, list[list[str]]]:
    """Conversations by split (see SPLITS); the first one with a given opening (case aside) wins."""
    splits: dict[str, list[list[str]]] = {name: [] for name, _ in SPLITS}
    seen: set[str] = set()
    for conversation in conversations:
        key = conversation[0].lower()
        if key in seen:
            continue
        seen.add(key)
        position, edge = _bucket(key), 0.0
        for name, fraction in SPLITS:
            edge += fraction
            if position < edge or name == SPLITS[-1][0]:
                splits[name].append(conversation)
                break
    return splits


def sft_record(conversation: list[str]) -> dict:
    """Alternating user / assistant messages, ending with an assistant turn."""
    turns = conversation if len(conversation) % 2 == 0 else conversation[:-1]
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]}


def prompt_record(conversation: list[str]) -> dict:
    return {"messages": [{"role": "user", "content": conversation[0]}]}
