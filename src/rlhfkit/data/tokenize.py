"""Token ids, labels, truncation and padding for the three stages.

**Boundaries.** The prompt text and the response text (see `rlhfkit.data.templates`) are
tokenized separately with ``add_special_tokens=False``, and their ids are concatenated.
The prompt/response boundary is then exact, and the prompt ids are the same ones PPO
generates from. The price is that a token merge across the boundary is never formed.

**Special tokens in the data are text.** A record whose response contains the characters
``<|endoftext|>`` must not plant a real EOS (or pad) id: user text is tokenized with
``split_special_tokens=True``, so those characters become ordinary tokens. The one exception
is chat text rendered by the tokenizer's own chat template, whose markers (``<|im_start|>``…)
must stay special; a chat message that itself contains one of the tokenizer's special tokens
is refused (`DataError`), since it cannot be kept as plain text inside the template.

**EOS.** ``tokenizer.eos_token_id`` is appended to every response: SFT targets and both
preference responses. The SFT model learns to stop, and the reward model reads its score
at the EOS, the last non-pad token (N+ details 2 and 11). PAD must differ from EOS
(`ensure_pad_token`). Otherwise EOS would be masked as padding (N+ detail 4).

**Encoder reward models** (a tokenizer with a ``[CLS]`` token: BERT, DeBERTa…) get no EOS: each
preference response is framed with its prompt by the tokenizer's own pair layout,
``[CLS] prompt [SEP] response [SEP]`` with token types (``rlhfkit.data.pairs``), and the model reads its
score at ``[CLS]``. Truncation follows the rule below within ``max_length`` minus the frame's tokens.

**SFT labels.** Prompt positions are labelled -100 (completion-only loss). Response tokens
and the EOS are labelled with their own ids, and so are the tokens of every earlier assistant
turn of a chat record (`render_prompt_segments`): the loss covers every assistant turn. Each
segment is tokenized on its own, so turn boundaries are exact too. The model shifts labels
internally.

**Truncation** to ``max_length`` tokens (prompt + response + EOS):

1. If everything fits, nothing changes.
2. The response is cut from the right. The EOS goes with it: the model must not learn to
   stop at an artificial cut, and the reward model then scores the last kept token.
3. The prompt is cut from the left (its end is kept, next to the response) only when it
   would leave the response fewer than ``min(response length, max_length // 4)`` tokens.
   It then keeps its last ``max_length - min(response length, max_length // 4)`` tokens.
   A response shorter than a quarter of ``max_length`` therefore survives whole, EOS
   included. For preferences the prompt is shared, so the longer response sets the cut.

``TruncationStats`` counts examples seen (``total``), examples kept but cut
(``truncated``) and examples dropped (``dropped``): a response cut to nothing, or a
preference pair that truncation makes identical. Prompts for generation are
left-truncated to ``max_prompt_length``.

**Padding.** SFT and preference batches are padded on the right, and labels are padded
with -100. Prompt batches are padded on the left, so that generation continues right
after the last prompt token. Attention masks come from the true lengths.

**Packing** (`pack_sft`, optional) concatenates tokenized SFT examples back to back and
cuts them into blocks of exactly ``max_length`` tokens (the last block may be shorter).
Caveat: attention crosses example boundaries, because CPU eager attention has no
block-diagonal mask, so a token can attend to the unrelated example before it. The labels
carry over, so the loss is still completion-only. The first token of a block that starts
mid-example has no context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rlhfkit.data.pairs import is_encoder_tokenizer, pair_template
from rlhfkit.data.records import DataError, InstructionExample, PreferenceExample, PromptExample
from rlhfkit.data.templates import render_chat_response, render_preference_responses, render_prompt, render_prompt_segments

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value skipped by the cross-entropy loss
PAD_TOKEN = "<|pad|>"


@dataclass
class TruncationStats:
    """Counts over one tokenization pass; log ``as_dict()`` so silent truncation is visible."""

    total: int = 0
    truncated: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "truncated": self.truncated, "dropped": self.dropped}


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give ``tokenizer`` a pad token distinct from EOS; True if it changed.

    When it returns True, call ``model.resize_token_embeddings(len(tokenizer))``.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; rlhfkit appends EOS to every response")
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(f"could not add a pad token distinct from EOS {tokenizer.eos_token!r}")
    return True


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; rlhfkit appends EOS to every response")
    return tokenizer.eos_token_id


def _check_length(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")


def _templated(tokenizer: PreTrainedTokenizerBase, example) -> bool:
    """True when the example's text comes from the tokenizer's chat template (its markers are special)."""
    return getattr(example, "messages", None) is not None and bool(tokenizer.chat_template)


def _refuse_special_text(tokenizer: PreTrainedTokenizerBase, example, index: int) -> None:
    """A chat message holding a special token's text cannot stay plain text inside a chat template."""
    specials = [t for t in tokenizer.all_special_tokens if t]
    texts = [(f"messages[{i}].content", m["content"]) for i, m in enumerate(example.messages)]
    if isinstance(example, PreferenceExample):  # its replies are rendered through the template too
        texts += [("chosen", example.chosen), ("rejected", example.rejected)]
    for field, text in texts:
        found = next((t for t in specials if t in text), None)
        if found is not None:
            raise DataError(f"record {index + 1}", 0, None,
                            f"{field} contains the special token {found!r} as text; rendered through the "
                            "chat template it would act as a real one: remove it from the data")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, templated: bool = False) -> list[int]:
    """Token ids of `text`; special-token text in user data stays text unless a chat template wrote it."""
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not templated)


def _encode_example_text(tokenizer, example, index: int, text: str) -> list[int]:
    templated = _templated(tokenizer, example)
    if templated:
        _refuse_special_text(tokenizer, example, index)
    return _encode(tokenizer, text, templated)


def fit_to_length(prompt: list[int], responses: list[list[int]], max_length: int) -> tuple[list[int], list[list[int]], bool]:
    """Apply the truncation rule of the module docstring to a prompt and its response(s)."""
    longest = max(len(r) for r in responses)
    if len(prompt) + longest <= max_length:
        return prompt, responses, False
    prompt_budget = max_length - min(longest, max_length // 4)
    if len(prompt) > prompt_budget:
        prompt = prompt[len(prompt) - prompt_budget:]
    room = max_length - len(prompt)
    return prompt, [r[:room] for r in responses], True


def tokenize_sft(
    examples: Sequence[InstructionExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stats: TruncationStats | None = None,
) -> list[dict[str, list[int]]]:
    """``{"input_ids", "labels"}`` per example; labels are -100 on the prompt."""
    _check_length("max_length", max_length)
    eos = _eos_id(tokenizer)
    stats = stats if stats is not None else TruncationStats()
    out = []
    for index, example in enumerate(examples):
        stats.total += 1
        prompt, prompt_labels = [], []
        for text, learned in render_prompt_segments(tokenizer, example):
            ids = _encode_example_text(tokenizer, example, index, text)
            prompt += ids
            prompt_labels += ids if learned else [IGNORE_INDEX] * len(ids)
        response = _encode_example_text(tokenizer, example, index, render_chat_response(tokenizer, example)) + [eos]
        kept, (response,), cut = fit_to_length(prompt, [response], max_length)
        if not response:
            stats.dropped += 1
            continue
        stats.truncated += cut
        prompt_labels = prompt_labels[len(prompt) - len(kept):]  # the prompt is cut from the left only
        out.append({"input_ids": kept + response, "labels": prompt_labels + response})
    return out


def pack_sft(tokenized: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate tokenized SFT examples into blocks of ``max_length`` (see the packing caveat)."""
    _check_length("max_length", max_length)
    input_ids: list[int] = []
    labels: list[int] = []
    for example in tokenized:
        input_ids.extend(example["input_ids"])
        labels.extend(example["labels"])
    return [
        {"input_ids": input_ids[i : i + max_length], "labels": labels[i : i + max_length]}
        for i in range(0, len(input_ids), max_length)
    ]


def tokenize_preferences(
    examples: Sequence[PreferenceExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stats: TruncationStats | None = None,
) -> list[dict]:
    """``{"chosen_input_ids", "rejected_input_ids", "margin", "p_chosen"}`` per pair; prompt + response + EOS.

    For an encoder tokenizer each side is the framed pair (prompt, response), and ``chosen_token_type_ids``
    / ``rejected_token_type_ids`` come with it where the tokenizer makes token types (see the module docstring)."""
    _check_length("max_length", max_length)
    frame = pair_template(tokenizer) if is_encoder_tokenizer(tokenizer) else None
    end = [] if frame else [_eos_id(tokenizer)]
    budget = max_length - (frame.num_special if frame else 0)
    _check_length("max_length minus the encoder's special tokens", budget)
    stats = stats if stats is not None else TruncationStats()
    out = []
    for index, example in enumerate(examples):
        stats.total += 1
        prompt = _encode_example_text(tokenizer, example, index, render_prompt(tokenizer, example))
        chosen_text, rejected_text = render_preference_responses(tokenizer, example)
        chosen = _encode_example_text(tokenizer, example, index, chosen_text) + end
        rejected = _encode_example_text(tokenizer, example, index, rejected_text) + end
        prompt, (chosen, rejected), cut = fit_to_length(prompt, [chosen, rejected], budget)
        if chosen == rejected:  # cut to the same tokens (or to nothing): no preference left
            stats.dropped += 1
            continue
        stats.truncated += cut
        pair = {"margin": example.margin, "p_chosen": example.p_chosen}
        if frame is None:
            out.append({"chosen_input_ids": prompt + chosen, "rejected_input_ids": prompt + rejected, **pair})
            continue
        for side, response in (("chosen", chosen), ("rejected", rejected)):
            pair[f"{side}_input_ids"], types = frame.build(prompt, response)
            if frame.uses_token_types:  # BERT's segments; RoBERTa and DistilBERT take none
                pair[f"{side}_token_type_ids"] = types
        out.append(pair)
    return out


def encode_prompt(tokenizer: PreTrainedTokenizerBase, example) -> list[int]:
    """The prompt ids of one record, as every stage encodes them (templates, special-token text)."""
    return _encode_example_text(tokenizer, example, 0, render_prompt(tokenizer, example))


def tokenize_prompts(
    examples: Sequence[PromptExample | InstructionExample],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> list[list[int]]:
    """Prompt ids for generation, keeping the last ``max_prompt_length`` tokens of long prompts."""
    _check_length("max_prompt_length", max_prompt_length)
    stats = stats if stats is not None else TruncationStats()
    out = []
    for index, example in enumerate(examples):
        stats.total += 1
        ids = _encode_example_text(tokenizer, example, index, render_prompt(tokenizer, example))
        if not ids:
            stats.dropped += 1
            continue
        if len(ids) > max_prompt_length:
            ids = ids[len(ids) - max_prompt_length:]
            stats.truncated += 1
        out.append(ids)
    return out


# ---------------------------------------------------------------- collators


def _pad(rows: Sequence[list[int]], value: int, width: int, left: bool = False) -> torch.Tensor:
    """Pad ``rows`` to ``width``; returns a (B, width) LongTensor."""
    if left:
        padded = [[value] * (width - len(r)) + list(r) for r in rows]
    else:
        padded = [list(r) + [value] * (width - len(r)) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def _mask(rows: Sequence[list[int]], width: int, left: bool = False) -> torch.Tensor:
    """(B, width) attention mask: 1 on real tokens, 0 on padding."""
    return _pad([[1] * len(r) for r in rows], 0, width, left)


def _width(rows: Sequence[list[int]]) -> int:
    if not rows:
        raise ValueError("cannot collate an empty batch")
    return max(len(r) for r in rows)


@dataclass(frozen=True)
class SFTCollator:
    """Right-pads ``input_ids`` with ``pad_token_id`` and ``labels`` with -100."""

    pad_token_id: int

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in batch]
        width = _width(ids)
        return {
            "input_ids": _pad(ids, self.pad_token_id, width),  # (B, T)
            "attention_mask": _mask(ids, width),  # (B, T)
            "labels": _pad([example["labels"] for example in batch], IGNORE_INDEX, width),  # (B, T)
        }


@dataclass(frozen=True)
class PreferenceCollator:
    """Right-pads chosen and rejected to one common width, so they can be stacked into one forward.

    The reward is read at the last non-pad token of each row (``attention_mask.sum(-1) - 1``).
    ``margin`` is a float tensor (B,) with 0.0 where a pair has none; ``p_chosen`` (B,) the soft
    label, 1.0 (chosen is preferred, a hard label) where a pair has none. An encoder's pairs also
    carry ``*_token_type_ids``, padded with 0.
    """

    pad_token_id: int

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        chosen = [example["chosen_input_ids"] for example in batch]
        rejected = [example["rejected_input_ids"] for example in batch]
        width = _width(chosen + rejected)
        margins = [0.0 if example["margin"] is None else float(example["margin"]) for example in batch]
        targets = [1.0 if example.get("p_chosen") is None else float(example["p_chosen"]) for example in batch]
        return {
            "chosen_input_ids": _pad(chosen, self.pad_token_id, width),  # (B, T)
            "chosen_attention_mask": _mask(chosen, width),  # (B, T)
            "rejected_input_ids": _pad(rejected, self.pad_token_id, width),  # (B, T)
            "rejected_attention_mask": _mask(rejected, width),  # (B, T)
            "margin": torch.tensor(margins, dtype=torch.float32),  # (B,)
            "p_chosen": torch.tensor(targets, dtype=torch.float32),  # (B,)
            **{f"{side}_token_type_ids": _pad([example[f"{side}_token_type_ids"] for example in batch], 0, width)
               for side in ("chosen", "rejected") if f"{side}_token_type_ids" in batch[0]},  # (B, T) encoders only
        }


@dataclass(frozen=True)
class PromptCollator:
    """Left-pads prompt ids for generation: every row ends at its last prompt token."""

    pad_token_id: int

    def __call__(self, batch: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        width = _width(batch)
        return {
            "input_ids": _pad(batch, self.pad_token_id, width, left=True),  # (B, T)
            "attention_mask": _mask(batch, width, left=True),  # (B, T)
        }
