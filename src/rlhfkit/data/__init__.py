"""Data: JSONL formats and validation (`records`), text templates (`templates`), and
token ids, truncation and collation (`tokenize`). Each module's docstring documents its part."""

from rlhfkit.data.records import (
    DataError,
    InstructionExample,
    PreferenceExample,
    PromptExample,
    load_records,
    read_instructions,
    read_preferences,
    read_prompts,
    split_holdout,
)
from rlhfkit.data.templates import render_chat_response, render_prompt
from rlhfkit.data.tokenize import (
    IGNORE_INDEX,
    PreferenceCollator,
    PromptCollator,
    SFTCollator,
    TruncationStats,
    ensure_pad_token,
    pack_sft,
    tokenize_preferences,
    tokenize_prompts,
    tokenize_sft,
)

__all__ = [
    "DataError",
    "IGNORE_INDEX",
    "InstructionExample",
    "PreferenceCollator",
    "PreferenceExample",
    "PromptCollator",
    "PromptExample",
    "SFTCollator",
    "TruncationStats",
    "ensure_pad_token",
    "load_records",
    "pack_sft",
    "read_instructions",
    "read_preferences",
    "read_prompts",
    "render_chat_response",
    "render_prompt",
    "split_holdout",
    "tokenize_preferences",
    "tokenize_prompts",
    "tokenize_sft",
]
