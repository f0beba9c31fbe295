"""Reading and validating rlhfkit's data files.

Every stage reads JSON Lines: one JSON object per line, UTF-8 (a leading byte-order mark
is tolerated). Blank lines are skipped. Keys not listed below are ignored, so a file can
carry ids, sources or scores of its own. A ``null`` value counts as a missing key for the
optional ``margin`` only.

**instructions** (SFT), either form on any line:

    {"prompt": "Q: 2+2?\\nA:", "response": " 4"}
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]}

The prompt/response form is raw completion text: the model sees ``prompt + response``
exactly as written, so put your own separator (a space, a newline) in the data. In the chat
form the last message must come from the assistant: it is the response, and the messages
before it (at least one) are the prompt. SFT learns every assistant turn, earlier ones too. Roles are ``system``, ``user`` and ``assistant``.
How either form becomes text is described in ``rlhfkit.data.templates``.

TRL's SFT formats are read too: ``{"prompt": ..., "completion": ...}`` (strings, the same as
prompt/response; or a message list and a one-assistant-message list, the same as ``messages``),
and ``{"text": ...}``, language-modelling text learned whole (no prompt).

**preferences** (reward model):

    {"prompt": "Q: 2+2?\\nA:", "chosen": " 4", "rejected": " 5", "margin": 1.0}

``chosen`` and ``rejected`` continue ``prompt`` verbatim and must differ. ``margin`` is
optional; when given it must be a finite number. Where people disagreed, a record may say how
much (``rlhfkit label export`` writes both), and the reward model then learns a soft
Bradley–Terry target instead of a hard 1:

    {..., "votes": {"chosen": 2, "rejected": 1, "tie": 0}, "p_chosen": 0.6667}

``votes`` counts non-negative integers (``tie`` may be left out; ties count ½ each way) with
at least one vote; ``p_chosen`` is the probability that ``chosen`` is preferred, in [0, 1].
Given both, they must agree: p_chosen = (chosen + tie / 2) / (chosen + rejected + tie).
Also read (TRL's preference formats):

- implicit prompt, hh-rlhf style: ``{"chosen": "<prompt> <reply>", "rejected": "<prompt> <other>"}``;
  the prompt is the texts' common prefix cut back to the last whitespace in it, so each reply
  starts at a word with its leading space;
- conversational, explicit prompt: ``{"prompt": [messages], "chosen": [{"role": "assistant",
  "content": ...}], "rejected": [...]}``;
- conversational, implicit prompt: ``{"chosen": [messages..., reply], "rejected": [messages...,
  other reply]}``, the same conversation up to the last (assistant) message.

A conversational pair is rendered with the chat template, exactly as the policy's chat prompts are
(``rlhfkit.data.templates``), so the reward model is trained on the text PPO will score.

**prompts** (PPO rollouts and evaluation): ``{"prompt": "..."}``, or the chat form
``{"messages": [...]}`` (or TRL's ``{"prompt": [messages]}``) that stops before the assistant's
reply (its last message must not come from the assistant).

Every text field must be a string with at least one non-whitespace character. A record
may use the string form or the chat form, not both. Errors are raised as `DataError`, whose
message is one line naming the file, the 1-based line and the field::

    data/prefs.jsonl:17: field 'chosen': must be a non-empty string

**Other column names.** A stage's ``data.columns`` maps rlhfkit's field names onto yours, for JSONL
files and ``datasets`` sources alike: ``columns: {prompt: question, chosen: good, rejected: bad}``
reads each record's ``question`` as ``prompt``, and so on. Fields it does not name keep their own
name; a column renamed onto a field replaces a column of that name. A name that is no field of the
stage's records (``response`` in preferences, say) is refused when the config is read, and an error
in a renamed column names both, e.g. ``field 'question' (columns: prompt)``.

Errors about the whole file (missing file, no records) have line 0, and the line number is
left out of the message. Anything that is not a ``.jsonl`` path (a hub dataset name, or a
local ``.json``/``.parquet``/``.csv``) goes through the optional ``datasets`` package
(``pip install rlhfkit[datasets]``) and is checked with the same rules, with line = row + 1.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

ROLES = ("system", "user", "assistant")
KINDS = ("instructions", "preferences", "prompts")

T = TypeVar("T")


@dataclass(frozen=True)
class InstructionExample:
    """One SFT record: ``prompt``/``response`` strings, or chat ``messages`` ending with the response."""

    prompt: str | None
    response: str
    messages: list[dict] | None = None


@dataclass(frozen=True)
class PreferenceExample:
    """One comparison: ``chosen`` is preferred to ``rejected`` as a continuation of ``prompt``."""

    prompt: str | None
    chosen: str
    rejected: str
    margin: float | None = None
    p_chosen: float | None = None  # soft label: P(chosen preferred); None = a hard label (1)
    messages: list[dict] | None = None  # chat form: the prompt's messages; chosen/rejected are assistant replies


@dataclass(frozen=True)
class PromptExample:
    """One prompt to generate from: a string, or chat ``messages`` without the assistant's reply."""

    prompt: str | None
    messages: list[dict] | None = None


class DataError(ValueError):
    """A data file (or dataset row) is unusable; ``str()`` is one ``path:line: field 'x': why`` line."""

    def __init__(self, path: str | Path, line: int, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = " ".join(message.splitlines())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line == 0 else f"{self.path}:{self.line}"
        what = self.message if self.field is None else f"field '{self.field}': {self.message}"
        return f"{where}: {what}"

    def __reduce__(self):  # keep the four attributes through pickling (worker processes)
        return (DataError, (self.path, self.line, self.field, self.message))


class _FieldError(Exception):
    """Raised by the record checkers; the reader adds the path and line."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------- field checks


_JSON_TYPES = ((bool, "boolean"), ((int, float), "number"), (str, "string"), ((list, tuple), "array"), (dict, "object"))


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages (bool first: it is an int)."""
    fallback = "null" if value is None else type(value).__name__
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), fallback)


def _text(obj: dict, key: str, field: str | None = None) -> str:
    field = field or key
    if key not in obj:
        raise _FieldError(field, "missing (expected a non-empty string)")
    value = obj[key]
    if not isinstance(value, str):
        raise _FieldError(field, f"must be a non-empty string, got {_json_type(value)}")
    if not value.strip():
        raise _FieldError(field, "must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON allows "\ud800"; no tokenizer does
        raise _FieldError(field, f"unpaired surrogate escape at character {e.start}") from None
    return value


def _margin(obj: dict) -> float | None:
    value = obj.get("margin")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError("margin", f"must be a finite number, got {_json_type(value)}")
    try:
        margin = float(value)
    except OverflowError:  # an integer too large for a float
        margin = math.inf
    if not math.isfinite(margin):
        raise _FieldError("margin", f"must be a finite number, got {value}")
    return margin


def _soft_label(obj: dict) -> float | None:
    """``p_chosen`` from ``votes`` and/or ``p_chosen`` (None when neither is given)."""
    from_votes = None
    if obj.get("votes") is not None:
        votes = obj["votes"]
        if not isinstance(votes, dict):
            raise _FieldError("votes", f"must be an object like {{\"chosen\": 2, \"rejected\": 1, \"tie\": 0}}, got {_json_type(votes)}")
        for key, count in votes.items():
            if key not in ("chosen", "rejected", "tie"):
                raise _FieldError(f"votes.{key}", "unknown key (expected 'chosen', 'rejected', 'tie')")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _FieldError(f"votes.{key}", f"must be a non-negative integer, got {json.dumps(count)[:40]}")
        chosen, rejected, tie = (votes.get(key, 0) for key in ("chosen", "rejected", "tie"))
        if chosen + rejected + tie == 0:
            raise _FieldError("votes", "counts no vote at all")
        from_votes = (chosen + 0.5 * tie) / (chosen + rejected + tie)
    value = obj.get("p_chosen")
    if value is None:
        return from_votes
    # compared before any float(): a huge JSON integer would overflow it
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _FieldError("p_chosen", f"must be a probability in [0, 1], got {json.dumps(value)[:40]}")
    if from_votes is not None and abs(from_votes - value) > 1e-4:
        raise _FieldError("p_chosen", f"{value} disagrees with votes, which give {from_votes:.4f}")
    return float(value)


def _message_list(value: Any, field: str) -> list[dict]:
    """A checked list of {role, content} messages (only those two keys kept)."""
    if not isinstance(value, list) or not value:
        got = _json_type(value) if value else "an empty array"
        raise _FieldError(field, f"must be a non-empty array of {{role, content}} objects, got {got}")
    messages = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise _FieldError(where, f"must be an object with 'role' and 'content', got {_json_type(message)}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = json.dumps(role)[:40] if "role" in message else "missing"
            raise _FieldError(f"{where}.role", f"must be 'system', 'user' or 'assistant', got {shown}")
        # Only role and content are kept: chat templates receive exactly these two keys.
        messages.append({"role": role, "content": _text(message, "content", f"{where}.content")})
    return messages


def _messages(obj: dict, ends_with_response: bool, field: str = "messages") -> list[dict]:
    messages = _message_list(obj[field], field)
    last = f"{field}[{len(messages) - 1}].role"
    if ends_with_response:
        if messages[-1]["role"] != "assistant":
            raise _FieldError(last, "the last message must come from the assistant (it is the response)")
        if len(messages) < 2:
            raise _FieldError(field, "needs at least one prompt message before the assistant's response")
    elif messages[-1]["role"] == "assistant":
        raise _FieldError(last, "a prompt must not end with an assistant message (the policy writes that turn)")
    return messages


def _one_form(obj: dict, string_keys: tuple[str, ...]) -> bool:
    """True for the chat form; refuse records that mix both forms."""
    if "messages" not in obj:
        return False
    mixed = [key for key in string_keys if key in obj]
    if mixed:
        raise _FieldError("messages", f"give either 'messages' or {'/'.join(map(repr, string_keys))}, not both")
    return True


def _instruction(obj: dict) -> InstructionExample:
    if _one_form(obj, ("prompt", "response", "completion", "text")):
        messages = _messages(obj, ends_with_response=True)
        return InstructionExample(prompt=None, response=messages[-1]["content"], messages=messages)
    if "completion" in obj or "text" in obj:
        return _trl_instruction(obj)
    return InstructionExample(prompt=_text(obj, "prompt"), response=_text(obj, "response"))


def _preference(obj: dict) -> PreferenceExample:
    prompt, messages, chosen, rejected = _preference_parts(obj)
    if chosen == rejected:
        raise _FieldError("rejected", "identical to 'chosen' (the pair carries no preference)")
    return PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected, margin=_margin(obj), p_chosen=_soft_label(obj),
                             messages=messages)


def _prompt(obj: dict) -> PromptExample:
    if _one_form(obj, ("prompt",)):
        return PromptExample(prompt=None, messages=_messages(obj, ends_with_response=False))
    if isinstance(obj.get("prompt"), list):  # TRL's conversational prompt-only form
        return PromptExample(prompt=None, messages=_messages(obj, ends_with_response=False, field="prompt"))
    return PromptExample(prompt=_text(obj, "prompt"))


# ---------------------------------------------------------------- TRL's dataset formats


def _trl_instruction(obj: dict) -> InstructionExample:
    """``{"prompt", "completion"}`` (strings, or message lists) and ``{"text"}`` (all of it learned)."""
    if "response" in obj:
        raise _FieldError("completion", "give either 'response' or 'completion', not both")
    if "text" in obj:
        if "prompt" in obj or "completion" in obj:
            raise _FieldError("text", "a 'text' record is learned whole: give 'text' alone, or 'prompt' and 'completion'")
        return InstructionExample(prompt="", response=_text(obj, "text"))
    if isinstance(obj.get("prompt"), list) or isinstance(obj.get("completion"), list):
        prompt = _messages(obj, ends_with_response=False, field="prompt")
        completion = _assistant_reply(obj, "completion")
        messages = prompt + [{"role": "assistant", "content": completion}]
        return InstructionExample(prompt=None, response=completion, messages=messages)
    return InstructionExample(prompt=_text(obj, "prompt"), response=_text(obj, "completion"))


def _assistant_reply(obj: dict, field: str) -> str:
    """The content of a one-message list ``[{"role": "assistant", "content": ...}]``."""
    if field not in obj:
        raise _FieldError(field, "missing (expected an array with one assistant message)")
    messages = _message_list(obj[field], field)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise _FieldError(field, "must hold exactly one message, from the assistant (the reply to the prompt)")
    return messages[0]["content"]


def _preference_parts(obj: dict) -> tuple[str | None, list[dict] | None, str, str]:
    """(prompt, prompt messages, chosen, rejected) of any preference form; see the module docstring."""
    conversational = any(isinstance(obj.get(key), list) for key in ("prompt", "chosen", "rejected"))
    if conversational:
        if "prompt" in obj:
            prompt = _messages(obj, ends_with_response=False, field="prompt")
            return None, prompt, _assistant_reply(obj, "chosen"), _assistant_reply(obj, "rejected")
        return _implicit_chat_prompt(obj)
    chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
    if "prompt" in obj:
        return _text(obj, "prompt"), None, chosen, rejected
    return _implicit_text_prompt(chosen, rejected)


def _implicit_chat_prompt(obj: dict) -> tuple[None, list[dict], str, str]:
    """Conversations that share every message but the last assistant reply: that prefix is the prompt."""
    for field in ("chosen", "rejected"):
        if field not in obj:
            raise _FieldError(field, "missing (expected an array of {role, content} messages)")
    chosen, rejected = _message_list(obj["chosen"], "chosen"), _message_list(obj["rejected"], "rejected")
    shared = len(chosen) - 1
    if len(rejected) != len(chosen) or chosen[:shared] != rejected[:shared]:
        raise _FieldError("rejected", "without 'prompt', 'chosen' and 'rejected' must be the same conversation up to "
                                      "the last message (the replies compared)")
    for field, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise _FieldError(f"{field}[{shared}].role", "the last message must come from the assistant (the reply compared)")
    if shared == 0 or chosen[shared - 1]["role"] == "assistant":
        raise _FieldError("chosen", "needs the prompt's messages (ending with a user or system turn) before the reply")
    return None, chosen[:shared], chosen[-1]["content"], rejected[-1]["content"]


def _implicit_text_prompt(chosen: str, rejected: str) -> tuple[str, None, str, str]:
    """hh-rlhf style: two full texts; the prompt is their common prefix, cut back to the last
    whitespace in it so a reply starts at a word (``"…Assistant: Sure"`` vs ``"…Assistant: Sorry"``
    → prompt ``"…Assistant:"``, replies ``" Sure"`` and ``" Sorry"``)."""
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = max((i for i in range(common) if chosen[i].isspace()), default=-1)
    while cut > 0 and chosen[cut - 1].isspace():  # the reply keeps the whole whitespace run
        cut -= 1
    if cut <= 0 or not chosen[:cut].strip():
        raise _FieldError("prompt", "missing, and 'chosen' and 'rejected' share no prompt text to take it from")
    return chosen[:cut], None, chosen[cut:], rejected[cut:]


# Every field each kind of record reads: the names `data.columns` may map onto.
FIELDS: dict[str, tuple[str, ...]] = {
    "instructions": ("prompt", "response", "completion", "text", "messages"),
    "preferences": ("prompt", "chosen", "rejected", "margin", "votes", "p_chosen"),
    "prompts": ("prompt", "messages"),
}


def check_columns(columns: dict[str, str] | None, kind: str) -> None:
    """ValueError (one line) when `columns` maps onto a name that is no field of `kind` records,
    or maps two fields onto one column."""
    if not columns:
        return
    for target, source in columns.items():
        if target not in FIELDS[kind]:
            raise ValueError(f"columns.{target}: {target!r} is not a field of {kind} records "
                             f"(fields: {', '.join(FIELDS[kind])})")
        if not source.strip():
            raise ValueError(f"columns.{target}: give the name of your column that holds {target!r}")
    sources = list(columns.values())
    if len(set(sources)) != len(sources):
        twice = next(name for name in sources if sources.count(name) > 1)
        raise ValueError(f"columns: column {twice!r} is mapped onto two fields")


def _renamed(obj: dict, columns: dict[str, str] | None) -> dict:
    """The record with each mapped column under rlhfkit's field name (a renamed column replaces one
    already called that; a mapped column the record lacks is simply absent, and reported missing)."""
    if not columns:
        return obj
    sources = set(columns.values())
    out = {key: value for key, value in obj.items() if key not in sources and key not in columns}
    out.update({target: obj[source] for target, source in columns.items() if source in obj})
    return out


_PARSERS: dict[str, Callable[[dict], Any]] = {
    "instructions": _instruction,
    "preferences": _preference,
    "prompts": _prompt,
}


# ---------------------------------------------------------------- readers


def _parse_row(obj: Any, parse: Callable[[dict], T], path: str, line: int, columns: dict[str, str] | None = None) -> T:
    if not isinstance(obj, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {_json_type(obj)}")
    try:
        return parse(_renamed(obj, columns))
    except _FieldError as e:
        raise DataError(path, line, _user_field(e.field, columns), e.message) from None


def _user_field(field: str | None, columns: dict[str, str] | None) -> str | None:
    """`chosen[0].content` -> `good[0].content (columns: chosen)` when `chosen` was renamed from `good`."""
    if not field or not columns:
        return field
    head = next((t for t in columns if field == t or field.startswith((f"{t}[", f"{t}."))), None)
    return f"{columns[head]}{field[len(head):]} (columns: {head})" if head else field


def jsonl_objects(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line: UTF-8 (a leading BOM tolerated), JSON, an object."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, 0, None, "file not found") from None
    except OSError as e:
        raise DataError(path, 0, None, f"cannot read file: {e.strerror or e}") from None
    rows = []
    # Split on b"\n" only, so line numbers match what editors and `sed -n` show.
    for line, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:  # offset within the line
            raise DataError(path, line, None, f"invalid UTF-8 (byte offset {e.start})") from None
        if line == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, line, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, line, None, f"expected a JSON object, got {_json_type(obj)}")
        rows.append((line, obj))
    if not rows:
        raise DataError(path, 0, None, "no records (the file is empty or holds only blank lines)")
    return rows


def _read_jsonl(path: str | Path, parse: Callable[[dict], T], columns: dict[str, str] | None = None) -> list[T]:
    return [_parse_row(obj, parse, str(path), line, columns) for line, obj in jsonl_objects(path)]


def read_instructions(path: str | Path) -> list[InstructionExample]:
    """Read and check an instructions JSONL file (SFT data)."""
    return _read_jsonl(path, _instruction)


def read_preferences(path: str | Path) -> list[PreferenceExample]:
    """Read and check a preferences JSONL file (reward-model data)."""
    return _read_jsonl(path, _preference)


def read_prompts(path: str | Path) -> list[PromptExample]:
    """Read and check a prompts JSONL file (PPO rollouts, evaluation)."""
    return _read_jsonl(path, _prompt)


def load_records(source: str | Path, kind: str, columns: dict[str, str] | None = None) -> list:
    """Load ``kind`` records ("instructions", "preferences" or "prompts") from ``source``, its
    columns renamed by ``columns`` (rlhfkit's field -> your column; see the module docstring).

    A ``.jsonl`` path is read by the readers above and needs no optional package. Anything
    else needs ``datasets``: a local ``.json``/``.parquet``/``.csv`` file, or a hub dataset
    name, optionally suffixed with ``:split`` (default ``train``), e.g. ``org/name:test``.
    Each row is checked like a JSONL line; columns holding null count as absent.
    """
    if kind not in _PARSERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    parse = _PARSERS[kind]
    check_columns(columns, kind)
    src = str(source)
    if Path(src).is_dir():
        raise DataError(src, 0, None, "is a directory; give a .jsonl file (or a file/dataset name `datasets` reads)")
    if src.lower().endswith(".jsonl"):
        return _read_jsonl(src, parse, columns)
    try:
        import datasets
    except ImportError:
        raise DataError(
            src, 0, None,
            "only .jsonl files can be read without the optional 'datasets' package: "
            "pip install rlhfkit[datasets] (or convert the data to JSONL)",
        ) from None
    name, split = (src, "train") if Path(src).exists() else _split_suffix(src)
    builder = {".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(Path(name).suffix.lower())
    try:
        if builder is not None and Path(name).is_file():
            rows = datasets.load_dataset(builder, data_files=name, split=split)
        else:
            rows = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one readable line
        raise DataError(src, 0, None, f"datasets could not load it: {type(e).__name__}: {e}") from e
    records = []
    for i, row in enumerate(rows):
        present = {key: value for key, value in dict(row).items() if value is not None}
        records.append(_parse_row(present, parse, src, i + 1, columns))
    if not records:
        raise DataError(src, 0, None, f"no records in split '{split}'")
    return records


def _split_suffix(source: str) -> tuple[str, str]:
    """``"org/name:test"`` -> ``("org/name", "test")``; no suffix means ``train``.

    The first colon separates, so slicing splits such as ``train[:10%]`` survive.
    """
    name, sep, split = source.partition(":")
    return (name, split) if sep and name and split else (source, "train")


def split_holdout(records: Sequence[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Hold out ``eval_fraction`` of ``records`` at random (deterministic in ``seed``).

    Returns ``(train, eval)``, each in the original order. A fraction of 0 holds out
    nothing; a positive fraction holds out at least one record and keeps at least one for
    training whenever there are two or more records.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n = len(records)
    if eval_fraction == 0 or n < 2:
        return list(records), []
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [records[i] for i in sorted(held)]


def record_key(record: Any) -> str:
    """What makes two records the same example: every field but a preference's margin and soft label
    (the same pair with other vote counts is still the same example)."""
    fields = {k: v for k, v in asdict(record).items() if k not in ("margin", "p_chosen")}
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def drop_leaked(train: Sequence[T], held_out: Sequence[T]) -> tuple[list[T], int]:
    """Held-out records that do not also occur in `train`, and how many did.

    A duplicated record that falls on both sides of a train/held-out split is graded on an example
    the model trained on, which inflates held-out figures (RM accuracy, SFT loss). The training side
    keeps its duplicates (they may be intended weighting); the held-out side loses the copies."""
    seen = {record_key(r) for r in train}
    kept = [r for r in held_out if record_key(r) not in seen]
    return kept, len(held_out) - len(kept)
