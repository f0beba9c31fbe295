"""Tiny models built from a config (random init), for tests and smoke runs: no download.

`build_tiny_tokenizer` trains a byte-level BPE on a handful of sentences; `build_tiny_model`
saves a 2-layer GPT-2 causal LM with it as an ordinary HF checkpoint directory.
`build_tiny_encoder` saves a 2-layer BERT encoder (no head, as all-MiniLM-L6-v2 ships) with a
WordPiece tokenizer that frames pairs as ``[CLS] a [SEP] b [SEP]``, to train encoder reward models on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"

SAMPLE_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a happy day brings good luck and great joy",
    "the sad rain falls on a grey and gloomy town",
    "you will find love, wealth and wisdom soon",
    "never trust a computer you cannot lift",
    "all that glitters is not gold, but it is shiny",
]


def build_tiny_tokenizer(texts: Iterable[str] = SAMPLE_TEXT, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Byte-level BPE with EOS (also BOS) and a separate PAD token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, unk_token=None, padding_side="right"
    )


def build_tiny_model(
    out_dir: Path,
    tokenizer: PreTrainedTokenizerFast | None = None,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised GPT-2 causal LM + tokenizer to `out_dir`; returns it."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_encoder_tokenizer(texts: Iterable[str] = SAMPLE_TEXT, vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer with BERT's special tokens and pair framing (no EOS)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(list(texts), trainer=trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=ENCODER_SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", padding_side="right",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def build_tiny_encoder(out_dir: Path, tokenizer: PreTrainedTokenizerFast | None = None, hidden: int = 32,
                       layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised BERT encoder (with its pooler, no task head) + tokenizer to `out_dir`."""
    tokenizer = tokenizer or build_tiny_encoder_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, type_vocab_size=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id)
    out_dir = Path(out_dir)
    BertModel(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
