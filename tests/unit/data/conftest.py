"""Fixtures for the data tests: tiny local tokenizers (nothing is downloaded) and a JSONL writer."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# A tiny jinja chat template, enough to check that the chat-template path is taken.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "Q: what is two plus two?\nA: four",
    "the quick brown fox jumps over the lazy dog",
    "User: hello there\nAssistant: hi, how can I help?",
    "System: be brief.",
]


@pytest.fixture(scope="session")
def tokenizer_json() -> str:
    """A byte-level BPE (any text encodes, no UNK) trained in milliseconds, as JSON."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok.to_str()


def _wrap(tokenizer_json: str, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), **special)


@pytest.fixture
def tokenizer(tokenizer_json):
    """EOS "<|endoftext|>", a distinct PAD "<|pad|>", no chat template."""
    return _wrap(tokenizer_json, eos_token=EOS, pad_token=PAD)


@pytest.fixture
def chat_tokenizer(tokenizer_json):
    """Like `tokenizer`, with `CHAT_TEMPLATE` set."""
    tok = _wrap(tokenizer_json, eos_token=EOS, pad_token=PAD)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture
def eos_pad_tokenizer(tokenizer_json):
    """The GPT-2 habit this project forbids: PAD is the EOS token."""
    return _wrap(tokenizer_json, eos_token=EOS, pad_token=EOS)


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(name, rows) -> path; dict rows are JSON-encoded, str/bytes rows written as is."""

    def write(name: str, rows) -> str:
        path = tmp_path / name
        lines = []
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            lines.append(row.encode("utf-8") if isinstance(row, str) else row)
        path.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
        return str(path)

    return write
