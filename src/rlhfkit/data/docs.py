"""docs/data.md: the data formats, templates and truncation rule, from the docstrings that define them.

The data modules document their own rules (`records`: formats and validation, `templates`:
how records become text, `tokenize`: labels, truncation, padding, `pairs`: encoder RMs' pair frame);
docs/data.md is those docstrings in one page, so the page cannot drift from the code.
`python -m rlhfkit.data.docs` rewrites it; a test fails when it is out of date.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from rlhfkit.data import pairs, records, templates, tokenize

DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "data.md"
PARTS = ((records, "Formats and validation"), (templates, "From records to text"),
         (tokenize, "Tokens, labels, truncation and padding"), (pairs, "Encoder reward models: text pairs"))


def markdown() -> str:
    """The text of docs/data.md."""
    lines = ["# Data formats", "",
             "Generated from the docstrings of `rlhfkit.data.records`, `templates`, `tokenize` and `pairs` by",
             "`python -m rlhfkit.data.docs` (`make docs`). Do not edit by hand.", ""]
    for module, title in PARTS:
        lines += [f"## {title} (`{module.__name__}`)", "", inspect.cleandoc(module.__doc__ or ""), ""]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - `python -m rlhfkit.data.docs`
    DOCS_PATH.write_text(markdown(), encoding="utf-8")
    print(f"wrote {DOCS_PATH}")


if __name__ == "__main__":  # pragma: no cover
    main()
