"""The bundled default task: steer a small language model towards upbeat text.

A GPT-2-style model of a few million parameters is pretrained locally on the BSD
fortune-cookie corpus, fine-tuned on instruction pairs cut from the same text, and then
tuned with RLHF against preferences from simulated annotators whose hidden taste is VADER
sentiment. Pieces:

* `corpus`: load, clean and split the fortunes; make SFT / prompt records.
* `tokenizer`: a byte-level BPE tokenizer trained on the corpus.
* `base_model`: the cached, locally pretrained base model.
* `gold`: the gold sentiment score, simulated annotators and preference-pair collection.
"""

from .base_model import (
    BaseModelSpec,
    build_base_model,
    default_cache_dir,
    load_pretrain_info,
    pretrain_texts,
)
from .corpus import (
    FORTUNE_FILES,
    SPLIT_NAMES,
    CorpusNotFoundError,
    SplitSizes,
    corpus_fingerprint,
    fortune_dir,
    load_fortunes,
    make_prompt_records,
    make_sft_records,
    normalise,
    split_corpus,
    write_jsonl,
)
from .gold import (
    DEFAULT_TEMPERATURES,
    SimulatedAnnotator,
    VaderGold,
    collect_preference_pairs,
    default_annotators,
    label_pairs,
)
from .tokenizer import EOS_TOKEN, PAD_TOKEN, train_tokenizer

__all__ = [
    "BaseModelSpec",
    "CorpusNotFoundError",
    "DEFAULT_TEMPERATURES",
    "EOS_TOKEN",
    "FORTUNE_FILES",
    "PAD_TOKEN",
    "SPLIT_NAMES",
    "SimulatedAnnotator",
    "SplitSizes",
    "VaderGold",
    "build_base_model",
    "collect_preference_pairs",
    "corpus_fingerprint",
    "default_annotators",
    "default_cache_dir",
    "fortune_dir",
    "label_pairs",
    "load_fortunes",
    "load_pretrain_info",
    "make_prompt_records",
    "make_sft_records",
    "normalise",
    "pretrain_texts",
    "split_corpus",
    "train_tokenizer",
    "write_jsonl",
]
