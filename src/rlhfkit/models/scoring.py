"""Reading one scalar per sequence from a reward (or value) model, and position ids.

A decoder's score is the head's output at the last non-pad token — the response's EOS when it has
one (N+ detail 11). Hugging Face's `*ForSequenceClassification` heads find that token through
`config.pad_token_id`, which our loaders always set to a pad distinct from EOS; a test checks
that a padded batch scores exactly like each sequence alone.

An encoder (BERT-style, rlhfkit.data.pairs) reads its score at [CLS], through its pooler: it is
called exactly as `model(**tokenizer(prompt, response))` calls it — its own positions, and the pair's
token types where its tokenizer makes them — on right-padded rows.
"""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_scores(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None, *, encoder: bool = False) -> torch.Tensor:
    """(B,) scalar score of each sequence: a decoder's rows right- or left-padded, an encoder's right-padded."""
    if encoder:
        types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return model(input_ids=input_ids, attention_mask=attention_mask, **types).logits.squeeze(-1)
    logits = model(  # no KV cache: nothing reads it
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits
    return logits.squeeze(-1)
