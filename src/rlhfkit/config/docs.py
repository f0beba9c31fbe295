"""Every config key with its type, default and description, generated from the pydantic models.

The descriptions are written once, in `Field(..., description=)`; this module only walks the
models. `rlhfkit config [SECTION]` prints the rows, and `docs/config.md` is this module's output
(`python -m rlhfkit.config.docs` rewrites it; a test fails when it is out of date).

Defaults are read from a default-built `RunConfig`, so a stage's own defaults show (`sft.optim`
has learning rate 2e-5, `rm.optim` 1e-5) rather than the shared section class's. A section that is
off unless given (`sft.lora`, `task`) is listed with the defaults it gets once you write it.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from rlhfkit.config.stages import RunConfig

DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "config.md"


@dataclass(frozen=True)
class Key:
    """One config key: dotted name, type, default (as YAML-ish text) and description."""

    name: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class SectionDoc:
    """A section (`sft.optim`) with its docstring's first paragraph and its own keys."""

    name: str
    summary: str
    keys: list[Key]


def _section_type(annotation: typing.Any) -> type[BaseModel] | None:
    """The Section class of `X` or `X | None`, else None."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: typing.Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def type_name(annotation: typing.Any) -> str:
    """`int`, `float or empty`, `"k1" | "k2"`, `list of str`."""
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        text = " or ".join(type_name(a) for a in args)
        return f"{text} or empty" if optional else text
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(json.dumps(v) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (typing.Any,)
        return f"list of {type_name(item)}"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(value: typing.Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, (list, dict, bool, str)):
        return json.dumps(value)
    return repr(value)


def _summary(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def sections(model: BaseModel | None = None, prefix: str = "", summary: str | None = None) -> list[SectionDoc]:
    """Every section under `model` (default: a default RunConfig), depth first, in field order."""
    model = model if model is not None else RunConfig()
    own, nested = [], []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        sub = _section_type(field.annotation)
        if sub is None:
            own.append(Key(f"{prefix}{name}", type_name(field.annotation), _default_text(value), field.description or ""))
            continue
        text = field.description or _summary(sub)
        if value is None:
            text += " Optional: off unless this section is given (its keys then default as listed)."
        nested += sections(value if value is not None else sub(), f"{prefix}{name}.", text)
    title = prefix.rstrip(".") or "(top level)"
    return [SectionDoc(title, summary or _summary(type(model)), own), *nested]


def find(section: str | None) -> list[SectionDoc]:
    """The sections named `section` or under it (`ppo` gives ppo, ppo.kl, …); all when None."""
    everything = sections()
    if not section:
        return everything
    chosen = [s for s in everything if s.name == section or s.name.startswith(section + ".")]
    if not chosen:
        from rlhfkit.config.load import ConfigError

        names = ", ".join(s.name for s in everything if s.name.count(".") == 0 and s.name != "(top level)")
        raise ConfigError(f"no config section {section!r}; top-level sections: {names} (or a dotted one, e.g. ppo.kl)")
    return chosen


def print_config(section: str | None) -> None:
    """`rlhfkit config [SECTION]`: the keys of SECTION (and the sections under it) on the terminal."""
    from rich.markup import escape
    from rich.table import Table

    from rlhfkit.training.progress import console

    for doc in find(section):
        table = Table(title=f"{escape(doc.name)}: {escape(doc.summary)}", title_justify="left", show_lines=False,
                      expand=True)
        for column, ratio in (("key", 3), ("type", 2), ("default", 2), ("description", 6)):
            table.add_column(column, ratio=ratio, overflow="fold")
        for key in doc.keys:
            table.add_row(escape(key.name), escape(key.type), escape(key.default), escape(key.description))
        console.print(table if doc.keys else table.title)
    console.print("All keys: docs/config.md", highlight=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """The text of docs/config.md."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models in `src/rlhfkit/config/` by `python -m rlhfkit.config.docs`",
        "(`make docs`); `rlhfkit config [SECTION]` prints the same on the terminal. Do not edit by hand.",
        "",
        "A YAML file sets any of these keys (nested as in the dotted name); `--set key=value` overrides one.",
        "Unknown keys are refused. \"empty\" means null / not given.",
        "",
    ]
    for section in sections():
        lines += [f"## `{section.name}`" if section.name != "(top level)" else "## Top-level keys", ""]
        if section.summary:
            lines += [section.summary, ""]
        if not section.keys:
            continue
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{k.name}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.description)} |" for k in section.keys]
        lines.append("")
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - `python -m rlhfkit.config.docs`
    DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOCS_PATH.write_text(markdown(), encoding="utf-8")
    print(f"wrote {DOCS_PATH}")


if __name__ == "__main__":  # pragma: no cover
    main()
