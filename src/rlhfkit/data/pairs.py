"""Encoder reward models (BERT, DeBERTa, RoBERTa, ELECTRA…): text pairs framed by the tokenizer itself.

A decoder reward model reads its score at the response's EOS, so rlhfkit appends one (data/tokenize.py).
An encoder has no use for that EOS: its tokenizer frames the text with its own special tokens and the
model reads the score where its architecture puts it, the first position ([CLS]) through the pooler of
`*ForSequenceClassification`. rlhfkit scores an encoder on the (prompt, response) **pair**, as
off-the-shelf encoder RMs are trained and called (``tokenizer(question, answer)``):

    [CLS] prompt [SEP] response [SEP]        token_type_ids 0 … 0 1 … 1   (BERT; RoBERTa: <s> A </s></s> B </s>)

which is what ``tokenizer(prompt, response)`` gives, and what ``pipeline("text-classification")``
gives for ``{"text": prompt, "text_pair": response}``. The frame is taken from the tokenizer once
(`pair_template`), not hard-coded, so every encoder's own layout is kept. The prompt and response ids
inside it are tokenized as everywhere else (special-token text in the data stays text) and truncated by
the same rule (data/tokenize.py), within ``max_length`` minus the frame's special tokens.

A tokenizer is an encoder's when it has a classification token (``cls_token``); decoders (GPT-2,
Llama, Qwen, SmolLM…) have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def is_encoder_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for an encoder's tokenizer: it frames text with its own classification token."""
    return tokenizer.cls_token is not None


@dataclass(frozen=True)
class PairTemplate:
    """How a tokenizer frames a pair: ``pre + A + mid + B + post``, each piece with its token types."""

    pre: tuple[int, ...]
    mid: tuple[int, ...]
    post: tuple[int, ...]
    types: tuple[tuple[int, ...], int, tuple[int, ...], int, tuple[int, ...]]  # pre, A, mid, B, post
    uses_token_types: bool  # the tokenizer returns token_type_ids (BERT does, RoBERTa and DistilBERT do not)

    @property
    def num_special(self) -> int:
        return len(self.pre) + len(self.mid) + len(self.post)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of the framed pair."""
        pre_t, a_t, mid_t, b_t, post_t = self.types
        ids = [*self.pre, *a, *self.mid, *b, *self.post]
        types = [*pre_t, *[a_t] * len(a), *mid_t, *[b_t] * len(b), *post_t]
        return ids, types


def pair_template(tokenizer: PreTrainedTokenizerBase) -> PairTemplate:
    """The tokenizer's pair frame, read off ``tokenizer("a", "b")`` around the ids of "a" and "b"."""
    a = tokenizer.encode("a", add_special_tokens=False)
    b = tokenizer.encode("b", add_special_tokens=False)
    framed = tokenizer("a", "b")
    ids = list(framed["input_ids"])
    types = list(framed.get("token_type_ids") or [0] * len(ids))
    i = next((k for k in range(len(ids)) if ids[k : k + len(a)] == a), None)
    j = None if i is None else next((k for k in range(i + len(a), len(ids)) if ids[k : k + len(b)] == b), None)
    if j is None:
        raise ValueError(f"cannot find the pair frame of {type(tokenizer).__name__}: tokenizer('a', 'b') gave {ids}")
    end_a, end_b = i + len(a), j + len(b)
    return PairTemplate(
        pre=tuple(ids[:i]), mid=tuple(ids[end_a:j]), post=tuple(ids[end_b:]),
        types=(tuple(types[:i]), types[i], tuple(types[end_a:j]), types[j], tuple(types[end_b:])),
        uses_token_types="token_type_ids" in framed,
    )
