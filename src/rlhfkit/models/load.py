"""Loading the four models of RLHF from any Hugging Face checkpoint (hub name or local path).

Invariants enforced here rather than hoped for:
- pad ≠ EOS (N+ detail 4): a tokenizer without its own pad token gets `<|pad|>` added and the
  embeddings are resized, otherwise EOS would be masked as padding and never learned.
- Dropout is off in every model we train with RL (N+ detail 6), so the PPO ratio is exactly 1
  on the first mini-batch. `disable_dropout` is applied by the PPO stage to all four models.
- `trust_remote_code` is passed through only when the config turns it on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhfkit.config.sections import ModelSection
from rlhfkit.data.tokenize import ensure_pad_token

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names the path."""


def _require_path(section: ModelSection, where: str) -> str:
    if not section.name_or_path:
        raise ModelLoadError(f"{where}.name_or_path is empty: give a Hugging Face model name or local path")
    return _resolve(section.name_or_path, f"{where}.name_or_path")


def _resolve(name_or_path: str, where: str) -> str:
    """`bundled:NAME` -> that bundled model's converted, cached directory (models/gguf.py); else unchanged."""
    from rlhfkit.models.gguf import BundledModelError, resolve_model_path

    try:
        return resolve_model_path(name_or_path)
    except BundledModelError as err:
        raise ModelLoadError(f"{where}: {err}") from None


def load_tokenizer(section: ModelSection, where: str) -> PreTrainedTokenizerBase:
    """The section's tokenizer (or the model's own), with a dedicated pad token."""
    source = _resolve(section.tokenizer, f"{where}.tokenizer") if section.tokenizer else _require_path(section, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=section.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{where}: cannot load tokenizer from {source!r}: {_first_line(err)}") from None
    if tokenizer.eos_token is None:
        raise ModelLoadError(f"{where}: tokenizer {source!r} has no EOS token; RLHF needs one to end responses")
    ensure_pad_token(tokenizer)
    return tokenizer


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def context_length(model: PreTrainedModel) -> int | None:
    """How many positions the model can attend over (None when its config does not say)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Match the embedding table to the tokenizer and record the pad/eos ids in the config."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def load_causal_lm(section: ModelSection, tokenizer: PreTrainedTokenizerBase, where: str) -> PreTrainedModel:
    """A causal LM (policy, reference, SFT model) in the section's dtype."""
    path = _require_path(section, where)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[section.dtype], trust_remote_code=section.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{where}: cannot load causal LM from {path!r}: {_first_line(err)}") from None
    return _finish(model, tokenizer)


def load_reward_model(section: ModelSection, tokenizer: PreTrainedTokenizerBase, where: str) -> PreTrainedModel:
    """A scalar-head model (`num_labels=1`); from a causal LM the head is freshly initialised.

    The head is re-initialised as N(0, 1/sqrt(d+1)) with zero bias (N+ detail 9) when the
    checkpoint has no trained score head, i.e. when we start from an SFT/base causal LM.
    """
    path = _require_path(section, where)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=DTYPES[section.dtype], trust_remote_code=section.trust_remote_code,
            output_loading_info=True,
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{where}: cannot load reward model from {path!r}: {_first_line(err)}") from None
    model, info = model
    head = _score_head(model)
    fresh = any(k.startswith(_head_prefix(model, head)) for k in info.get("missing_keys", []))
    if fresh and isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.normal_(0.0, 1.0 / (head.in_features + 1) ** 0.5)
            if head.bias is not None:
                head.bias.zero_()
    return _finish(model, tokenizer)


def score_head_name(model: PreTrainedModel) -> str | None:
    """The attribute holding a sequence-classification model's head (`score` or `classifier`)."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    return None


def _score_head(model: PreTrainedModel) -> nn.Module | None:
    name = score_head_name(model)
    return getattr(model, name) if name else None


def _head_prefix(model: PreTrainedModel, head: nn.Module | None) -> str:
    for name, module in model.named_modules():
        if module is head:
            return name
    return "score"


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability to 0 (modules and config), for exact PPO ratios."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Frozen, eval-mode model (reference and reward models)."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def save_pretrained_atomic(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, final_dir: Path) -> Path:
    """HF checkpoint (safetensors + config + tokenizer), written to a temp dir then renamed.

    A crash mid-write leaves only `<final>.tmp-*`, never a directory that looks complete.
    """
    from rlhfkit.training.checkpoint import atomic_directory

    with atomic_directory(final_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return final_dir


def check_model_source(section: ModelSection, where: str) -> None:
    """Fail early (before any training) on an empty or clearly missing local model path."""
    path = _require_path(section, where)
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") > 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise ModelLoadError(f"{where}.name_or_path: {path!r} is not a directory (and not a hub name)")
