"""Loading the four models of RLHF from any Hugging Face checkpoint (hub name or local path).

Invariants enforced here rather than hoped for:
- pad ≠ EOS (N+ detail 4): a tokenizer without its own pad token gets `<|pad|>` added and the
  embeddings are resized, otherwise EOS would be masked as padding and never learned.
- Dropout is off in every model we train with RL (N+ detail 6), so the PPO ratio is exactly 1
  on the first mini-batch. `disable_dropout` is applied by the PPO stage to all four models.
- `trust_remote_code` is passed through only when the config turns it on.
- Weights are read from safetensors only (a pickle-only `pytorch_model.bin` is refused, not
  unpickled), and must match the config: a missing or unexpected trunk weight is a
  ModelLoadError naming the directory and a few keys, never a model that is silently
  re-initialised at random. The one expected gap is a reward model's fresh score head (said once).
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
from rlhfkit.data.pairs import is_encoder_tokenizer
from rlhfkit.data.tokenize import ensure_pad_token
from rlhfkit.models.fused_activations import use_fused_activations

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """`dtype` of a model section as a torch dtype; `auto` is bf16 where a GPU supports it, else fp32."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[name]


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute activations in the backward pass instead of storing them (less memory, ~⅓ more compute).

    Non-reentrant checkpointing: it works with frozen inputs (LoRA) and gives the same gradients."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names the path."""


HEAD_NAMES = ("score", "classifier", "lm_head")  # task heads: present in one model class, absent in another
# Without one of these, AutoTokenizer builds an *empty* tokenizer from config.json alone (1 token).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")


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


def _weights_files(path: str) -> str:
    """The weights files of a local model directory, for error messages."""
    directory = Path(path)
    if not directory.is_dir():
        return path
    names = sorted(p.name for p in directory.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    return ", ".join(str(directory / n) for n in names[:3]) if names else f"{path} (no weights file in it)"


def _from_pretrained(auto_class, path: str, where: str, kind: str, **kwargs):
    """`auto_class.from_pretrained(path, use_safetensors=True, output_loading_info=True)`, any
    failure as one ModelLoadError line naming the weights file(s)."""
    try:
        return auto_class.from_pretrained(path, use_safetensors=True, output_loading_info=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - SafetensorError, RuntimeError (shapes), OSError, ValueError...
        text = _first_line(err)
        directory = Path(path)
        if directory.is_dir() and not any(directory.glob("*.safetensors")) and any(directory.glob("*.bin")):
            text = ("only pickle weights (pytorch_model.bin) found; rlhfkit loads safetensors only, never unpickles: "
                    "convert it with save_pretrained(..., safe_serialization=True)")
        elif "ignore_mismatched_sizes" in text or "size mismatch" in text:
            text = "weight shapes do not match its config.json"
        raise ModelLoadError(f"{where}: cannot load {kind} from {_weights_files(path)}: {text}") from None


# Between an encoder's trunk and its score head: BERT's and DeBERTa's pooler ([CLS] -> dense -> tanh),
# DistilBERT's pre_classifier. A base checkpoint may lack them (DeBERTa's does); they train with the head.
ENCODER_HEAD_PARTS = ("pooler", "pre_classifier")


def _is_head_key(key: str, head_prefix: str) -> bool:
    """A weight of the score head: the head itself, or one of ENCODER_HEAD_PARTS."""
    return key.startswith(head_prefix) or any(part in key.split(".") for part in ENCODER_HEAD_PARTS)


def _check_loading_info(info: dict, path: str, where: str, expected_missing: str | None = None) -> None:
    """ModelLoadError when weights were missing from the checkpoint or not used by the model.

    transformers only warns (and rlhfkit mutes its warnings): a config.json describing another
    architecture than the weights would otherwise train a randomly initialised model. Keys of a
    task head (`score`, `classifier`, `lm_head`) may be left over from another model class;
    `expected_missing` (a reward model's fresh score head) may be missing."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not (expected_missing and _is_head_key(k, expected_missing)))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if k.split(".")[0] not in HEAD_NAMES)
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
    for label, keys in (("missing from", missing), ("not used by the model in", unexpected), ("of the wrong shape in", mismatched)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise ModelLoadError(f"{where}: the weights in {path} do not match its config.json: {len(keys)} weights "
                                 f"{label} the checkpoint ({shown}); the model would start from random values there")


def _require_tokenizer_files(source: str, where: str) -> None:
    if Path(source).is_dir() and not any((Path(source) / name).exists() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{where}: no tokenizer in {source} (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
                             "next to the model, or set the section's `tokenizer`")


def load_tokenizer(section: ModelSection, where: str, encoder_ok: bool = False) -> PreTrainedTokenizerBase:
    """The section's tokenizer (or the model's own), with a dedicated pad token.

    `encoder_ok` (a reward model): an encoder's tokenizer (BERT-style, rlhfkit.data.pairs) needs no EOS;
    its pairs are framed by its own special tokens."""
    source = _resolve(section.tokenizer, f"{where}.tokenizer") if section.tokenizer else _require_path(section, where)
    _require_tokenizer_files(source, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=section.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as err:  # a malformed tokenizer.json raises KeyError/TypeError
        raise ModelLoadError(f"{where}: cannot load tokenizer from {source!r}: {_first_line(err)}") from None
    if encoder_ok and is_encoder_tokenizer(tokenizer):
        if tokenizer.pad_token is None:
            raise ModelLoadError(f"{where}: encoder tokenizer {source!r} has no pad token to batch with")
        return tokenizer
    if tokenizer.eos_token is None:
        hint = " (an encoder's tokenizer, with [CLS], is usable as a reward model only)" if is_encoder_tokenizer(tokenizer) else ""
        raise ModelLoadError(f"{where}: tokenizer {source!r} has no EOS token; RLHF needs one to end responses{hint}")
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
    """Match the embedding table to the tokenizer, record the pad/eos ids in the config, and run
    multi-operation activations as one kernel (models/fused_activations.py)."""
    use_fused_activations(model)
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
    model, info = _from_pretrained(AutoModelForCausalLM, path, where, "causal LM",
                                   dtype=resolve_dtype(section.dtype), trust_remote_code=section.trust_remote_code)
    _check_loading_info(info, path, where)
    return _finish(model, tokenizer)


def load_reward_model(section: ModelSection, tokenizer: PreTrainedTokenizerBase, where: str,
                      fresh_head: bool = True, fresh_init: str = "normal") -> PreTrainedModel:
    """A scalar-head model (`num_labels=1`); from a causal LM the head is freshly initialised.

    `fresh_head=False` (a reward model PPO scores with): a checkpoint without a trained score head
    is a ModelLoadError, since a random head would be a random reward.

    The head is re-initialised as N(0, 1/sqrt(d+1)) with zero bias (N+ detail 9) when the
    checkpoint has no trained score head, i.e. when we start from an SFT/base causal LM.
    `fresh_init="zero"` (PPO's critic) starts such a head at zero instead: every value is then 0,
    so the first advantages are the returns themselves. A random head on a real model's hidden
    states is noise larger than the returns (SmolLM2-135M: explained variance −4.6 at the first
    iteration, and value clipping lets the critic unlearn it only 0.2 per iteration).
    """
    path = _require_path(section, where)
    model, info = _from_pretrained(AutoModelForSequenceClassification, path, where, "reward model", num_labels=1,
                                   dtype=resolve_dtype(section.dtype), trust_remote_code=section.trust_remote_code)
    head = _score_head(model)
    prefix = _head_prefix(model, head)
    _check_loading_info(info, path, where, expected_missing=prefix)
    fresh = any(_is_head_key(k, prefix) for k in info.get("missing_keys", []))
    if fresh and not fresh_head:
        raise ModelLoadError(f"{where}: {path} has no trained score head (it is not a reward model); scoring with a "
                             "random head would be a random reward: train one with `rlhfkit rm`")
    if fresh:
        _say_fresh_head(where, path)
    if fresh and isinstance(head, nn.Linear):
        with torch.no_grad():
            if fresh_init == "zero":
                head.weight.zero_()
            else:
                head.weight.normal_(0.0, 1.0 / (head.in_features + 1) ** 0.5)
            if head.bias is not None:
                head.bias.zero_()
    return _finish(model, tokenizer)


_announced: set[tuple[str, str]] = set()


def _say_fresh_head(where: str, path: str) -> None:
    """Once per (role, checkpoint): a causal LM loaded as a reward model gets a new score head."""
    if (where, path) in _announced:
        return
    _announced.add((where, path))
    from rich.markup import escape

    from rlhfkit.training.progress import console

    console.print(f"\\[{escape(where)}] {escape(path)} has no score head yet: a fresh one is initialised (expected "
                  "when a reward model or critic starts from a language model)", highlight=False, soft_wrap=True)


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


def save_pretrained_atomic(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, final_dir: Path,
                           weights: dict | None = None) -> Path:
    """HF checkpoint (safetensors + config + tokenizer), written to a temp dir then renamed.

    A crash mid-write leaves only `<final>.tmp-*`, never a directory that looks complete.
    `weights`: the model's whole weights when FSDP has sharded its parameters (training/sharded.py).
    """
    from rlhfkit.training.checkpoint import atomic_directory, tensor_bytes

    with atomic_directory(final_dir, expected_bytes=tensor_bytes(weights if weights is not None else model)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
    return final_dir


def check_model_source(section: ModelSection, where: str) -> None:
    """Fail early (before any training) on an empty or clearly missing local model path."""
    path = _require_path(section, where)
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") > 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise ModelLoadError(f"{where}.name_or_path: {path!r} is not a directory (and not a hub name)")
    _require_tokenizer_files(section.tokenizer or path, where)
