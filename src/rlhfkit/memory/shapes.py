"""Model shapes for the memory planner: named presets, or a local config.json (never a download).

A `ModelShape` is the handful of numbers every memory term needs: layers, width, heads (and
key/value heads for grouped-query attention), MLP width and kind, vocabulary, positions, tied
embeddings. Two layouts cover the models rlhfkit meets:

* `gpt2`  — learned position embeddings, LayerNorm with bias, biased linears, a plain
  two-matrix MLP (h → I → h) with GELU;
* `llama` — rotary positions, RMSNorm, no biases (Qwen2 adds q/k/v biases), a gated
  three-matrix MLP (SwiGLU: gate, up, down). Mistral, Qwen2/3, Gemma and SmolLM share it.

Parameter counts are exact for these layouts (tests check them against transformers models
built on the meta device); presets state their source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

Layout = Literal["gpt2", "llama"]

#: model_type values with the GPT-2 layout (plain MLP, learned positions); every other causal LM
#: is planned with the Llama layout.
PLAIN_MLP_TYPES = ("gpt2",)


@dataclass(frozen=True)
class ModelShape:
    """What the memory formulas need to know about one transformer."""

    name: str
    layout: Layout
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    tied_embeddings: bool
    activation: str = "silu"  # GPT-2: gelu_new (HF default) or gelu_pytorch_tanh
    qkv_bias: bool = False  # Qwen2: biases on q, k, v

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (= value) projection: n_kv_heads × head_dim."""
        return self.n_kv_heads * self.head_dim

    def layer_params(self) -> int:
        """Parameters of one transformer block."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attention = 2 * h * h + 2 * h * kv  # q, o: h×h; k, v: h×kv
        if self.layout == "gpt2":
            biases = (h + 2 * kv) + h + i + h  # c_attn, attn c_proj, c_fc, mlp c_proj
            norms = 2 * 2 * h  # two LayerNorms, weight and bias
            return attention + 2 * h * i + biases + norms
        biases = (h + 2 * kv) if self.qkv_bias else 0
        return attention + 3 * h * i + biases + 2 * h  # gate, up, down; two RMSNorm weights

    def n_params(self) -> int:
        """All parameters (a tied output matrix counted once)."""
        embed = self.vocab * self.hidden
        positions = self.max_positions * self.hidden if self.layout == "gpt2" else 0
        final_norm = 2 * self.hidden if self.layout == "gpt2" else self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return embed + positions + self.n_layers * self.layer_params() + final_norm + head

    def scalar_head_params(self) -> int:
        """A reward model / critic: the same trunk, a (hidden → 1) score head instead of the LM head."""
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.n_params() - head + self.hidden

    def linear_shapes(self) -> dict[str, list[tuple[int, int]]]:
        """(in, out) of each linear in one block, by the module name peft targets."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        if self.layout == "gpt2":  # peft's "c_proj" matches both the attention and the MLP output
            return {"c_attn": [(h, h + 2 * kv)], "c_proj": [(h, h), (i, h)], "c_fc": [(h, i)]}
        return {"q_proj": [(h, h)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "o_proj": [(h, h)],
                "gate_proj": [(h, i)], "up_proj": [(h, i)], "down_proj": [(i, h)]}

    def default_lora_targets(self) -> tuple[str, ...]:
        """peft's default target modules for the layout (q/v projections; GPT-2's fused c_attn)."""
        return ("c_attn",) if self.layout == "gpt2" else ("q_proj", "v_proj")

    def lora_params(self, rank: int, targets: tuple[str, ...] | None = None) -> int:
        """Trainable LoRA parameters: r × (in + out) per adapted linear, in every block (Hu et al. 2021)."""
        linears = self.linear_shapes()
        targets = targets or self.default_lora_targets()
        unknown = [t for t in targets if t not in linears]
        if unknown:
            raise ValueError(f"LoRA target module(s) {unknown} are not linears of a {self.layout} block "
                             f"(known: {', '.join(linears)})")
        per_layer = sum(rank * (fan_in + fan_out) for t in targets for fan_in, fan_out in linears[t])
        return self.n_layers * per_layer


def _llama(name: str, layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int, pos: int,
           tied: bool = False, qkv_bias: bool = False) -> ModelShape:
    return ModelShape(name, "llama", layers, hidden, heads, kv, inter, vocab, pos, tied, "silu", qkv_bias)


#: Named shapes; the numbers are those of the models' published config.json files.
PRESETS: dict[str, ModelShape] = {
    "gpt2": ModelShape("gpt2 (124M)", "gpt2", 12, 768, 12, 12, 3072, 50257, 1024, True, "gelu_new"),
    "smollm2-135m": _llama("SmolLM2-135M", 30, 576, 9, 3, 1536, 49152, 8192, tied=True),
    "smollm2-360m": _llama("SmolLM2-360M", 32, 960, 15, 5, 2560, 49152, 8192, tied=True),
    "qwen2.5-0.5b": _llama("Qwen2.5-0.5B", 24, 896, 14, 2, 4864, 151936, 32768, tied=True, qkv_bias=True),
    "llama-3.2-1b": _llama("Llama-3.2-1B", 16, 2048, 32, 8, 8192, 128256, 131072, tied=True),
    "7b": _llama("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, 4096),
    "8b": _llama("Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8192),
    "13b": _llama("Llama-2-13B", 40, 5120, 40, 40, 13824, 32000, 4096),
    "70b": _llama("Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, 8192),
}


#: Hub names of the presets: a config naming one is planned without its config.json (nothing is downloaded).
HUB_NAMES = {
    "openai-community/gpt2": "gpt2",
    "huggingfacetb/smollm2-135m": "smollm2-135m", "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-360m": "smollm2-360m", "huggingfacetb/smollm2-360m-instruct": "smollm2-360m",
    "qwen/qwen2.5-0.5b": "qwen2.5-0.5b", "qwen/qwen2.5-0.5b-instruct": "qwen2.5-0.5b",
    "meta-llama/llama-3.2-1b": "llama-3.2-1b", "meta-llama/llama-2-7b-hf": "7b", "meta-llama/meta-llama-3-8b": "8b",
    "meta-llama/llama-2-13b-hf": "13b", "meta-llama/meta-llama-3-70b": "70b",
}


def _first(config, *names: str, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def shape_from_hf_config(config, name: str = "model") -> ModelShape:
    """The shape of a transformers `PretrainedConfig` (GPT-2 or Llama-family layout)."""
    model_type = getattr(config, "model_type", "")
    layout: Layout = "gpt2" if model_type in PLAIN_MLP_TYPES else "llama"
    hidden = _first(config, "hidden_size", "n_embd")
    heads = _first(config, "num_attention_heads", "n_head")
    layers = _first(config, "num_hidden_layers", "n_layer")
    vocab = _first(config, "vocab_size")
    if None in (hidden, heads, layers, vocab):
        raise ValueError(f"{name}: config.json (model_type {model_type!r}) lacks hidden size, heads, layers or vocab_size")
    kv = _first(config, "num_key_value_heads", default=heads)
    inter = _first(config, "intermediate_size", "n_inner", default=4 * hidden)
    positions = _first(config, "max_position_embeddings", "n_positions", default=2048)
    tied = bool(getattr(config, "tie_word_embeddings", True))
    activation = _first(config, "activation_function", "hidden_act", default="silu")
    qkv_bias = bool(getattr(config, "attention_bias", False)) or model_type == "qwen2"
    return ModelShape(name, layout, layers, hidden, heads, kv, inter, vocab, positions, tied, activation, qkv_bias)


def load_shape(source: str, where: str = "model") -> ModelShape:
    """A preset name, or a local directory holding config.json (read with local_files_only)."""
    key = source.lower()
    if key in PRESETS:
        return PRESETS[key]
    if Path(source).expanduser().is_dir() or Path(source).is_file():
        path = Path(source).expanduser()
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path.parent if path.is_file() else path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"{where}: cannot read config.json in {source}: {str(err).splitlines()[0]}") from None
        return shape_from_hf_config(config, name=Path(source).name or source)
    try:  # a hub name already in the local Hugging Face cache; nothing is downloaded
        from transformers import AutoConfig

        return shape_from_hf_config(AutoConfig.from_pretrained(source, local_files_only=True), name=source)
    except (OSError, ValueError):
        if key in HUB_NAMES:
            return PRESETS[HUB_NAMES[key]]
        raise ValueError(f"{where}: {source!r} is not a local model directory, a cached hub model or a preset "
                         f"({', '.join(PRESETS)}); the planner never downloads") from None


def with_vocab(shape: ModelShape, vocab: int) -> ModelShape:
    """The same shape with another vocabulary size (e.g. after a pad token is added)."""
    return replace(shape, vocab=vocab)
