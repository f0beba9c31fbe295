"""A saved reward model scores outside rlhfkit as it does inside: its tokenizer frames text the same way.

rlhfkit scores a decoder RM on ``prompt ids + response ids + EOS`` (no BOS), each part tokenized
without special tokens (data/tokenize.py). The saved RM's tokenizer is given that layout as its
post-processing, so the default ``tokenizer(text)`` — what ``pipeline("text-classification")`` calls —
appends the EOS (and adds nothing else):

    pipeline("text-classification", model=RM_DIR, function_to_apply="none")(prompt + response)
    pipeline(...)({"text": prompt, "text_pair": response})   # the exact ids rlhfkit scores

The second form tokenizes prompt and response apart, as rlhfkit does; the first is the same whenever
the prompt/response boundary is a pre-tokenizer boundary (a response that starts with a space or a
newline, a chat template's marker). rlhfkit itself always tokenizes with ``add_special_tokens=False``,
so the post-processing changes nothing inside it. An encoder RM (rlhfkit.data.pairs) already frames a
pair with its own special tokens, exactly as rlhfkit scores it; its tokenizer is saved unchanged.

What the pipeline gives is the raw score. PPO's reward is normalised with statistics the RM stage
stores in the checkpoint's config: ``(score - config.rlhfkit_score_mean) / config.rlhfkit_score_std``
(with ``ppo.reward.normalize``, the default). They cannot be folded into the weights: decoder score
heads (GPT-2, Llama, Qwen…) have no bias to take the mean.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from tokenizers.processors import TemplateProcessing

from rlhfkit.data.pairs import is_encoder_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def framed_like_rlhfkit(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of a decoder RM's tokenizer whose special-token framing is ``text + EOS``; an encoder's,
    or one without a Rust backend to hold the framing, is returned as it is."""
    if is_encoder_tokenizer(tokenizer) or not tokenizer.is_fast or tokenizer.eos_token is None:
        return tokenizer
    framed = copy.deepcopy(tokenizer)
    eos = tokenizer.eos_token
    framed.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"$A:0 {eos}:0", pair=f"$A:0 $B:0 {eos}:0", special_tokens=[(eos, tokenizer.eos_token_id)])
    return framed
