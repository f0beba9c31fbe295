"""A small byte-level BPE tokenizer trained on the task corpus.

Byte-level (as GPT-2): every string is encodable, there is no `<unk>`, and a word after a
space becomes one "Ġword" token, which is why the task's responses start with a space.

Special tokens: `<|endoftext|>` serves as both BOS and EOS (the GPT-2 habit); `<|pad|>` is
a separate pad token. Keeping pad distinct from EOS matters for RLHF: code that masks pad
positions must never also mask the EOS the policy emitted, or the model never learns to stop.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it for `transformers`.

    Deterministic for a given input (the `tokenizers` BPE trainer breaks ties by byte order).
    The two special tokens get ids 0 (`<|endoftext|>`) and 1 (`<|pad|>`).
    """
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: the first word of a prompt is not given a phantom space, so the
    # prompt/response boundary is exactly the space that starts the response.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so nothing is unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
        model_max_length=model_max_length,
        # No post-processor is set, so nothing is added around encoded text: BOS is a token we
        # have, not one we insert, and the pretraining stream places EOS between entries itself.
        clean_up_tokenization_spaces=False,
    )
