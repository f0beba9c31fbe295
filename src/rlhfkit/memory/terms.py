"""The memory terms, one small pure function each, in bytes. docs/memory.md derives every one.

Model states (ZeRO paper, Rajbhandari et al. 2020, "model states"): mixed-precision Adam keeps 2 bytes of
half-precision weights, 2 of half-precision gradients and K = 12 of fp32 optimizer state (master
weights, first and second moments) per parameter: 16 bytes. `Precision` names the four ways a
run can hold them:

    fp32   fp32 weights, gradients, moments                      4 + 4 + 8     = 16
    amp    fp32 weights under autocast (accelerate bf16/fp16)    4 + 4 + 8     = 16, activations 16-bit
    half   bf16/fp16 weights, no master copy (torch AdamW keeps
           its moments in the parameters' dtype)                 2 + 2 + 4     = 8
    mixed  half weights + fp32 master and moments (DeepSpeed)    2 + 2 + 4 + 8 = 16

Activations follow the counting method of Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models"): add up every tensor a layer saves for
backward. Their Megatron GPT layer saves 34·s·b·h + 5·a·s²·b bytes at 16 bits; the Hugging Face
layers rlhfkit trains differ (SDPA/flash attention keeps no s² scores, dropout is off so there are
no masks, RoPE, SwiGLU), so the coefficients below are counted for those implementations, per
token, in elements of the activation dtype:

    per layer   (8 + 2·kv/h)·h  +  c_mlp·I
                8h: each of the two norms' input, normalised value and output (6h), q and the
                attention output (2h); 2·kv: k and v (SDPA saves them);
                c_mlp = 4 for SwiGLU (gate, up, silu(gate), product), 2 for a fused GELU
                (its input, the down-projection's input), 5 for GPT-2's composed `gelu_new`
    outside     3h (Llama: embedding output, final RMSNorm) or 2h (GPT-2)
    checkpointed  per layer only its input, h; plus one layer's full set while it is recomputed
    LoRA        frozen linears and norms save less (layer_saved_per_token)
    16 bits     Llama's RMSNorm saves an fp32 copy of its input (norm_upcast_bytes)

bench/memory_plan.py checks these counts against live tensor bytes.
"""

from __future__ import annotations

from typing import Literal

from rlhfkit.memory.shapes import ModelShape

Precision = Literal["fp32", "amp", "half", "mixed"]

GB = 1e9  # decimal gigabytes, the unit of the seed's table (70B × 2 bytes = 140 GB)
GiB = 2**30

#: (weights, gradients, optimizer moments, master weights) bytes per parameter.
STATE_BYTES: dict[str, tuple[int, int, int, int]] = {
    "fp32": (4, 4, 8, 0),
    "amp": (4, 4, 8, 0),
    "half": (2, 2, 4, 0),
    "mixed": (2, 2, 8, 4),
}


def weight_bytes(params: int, precision: Precision) -> float:
    return params * STATE_BYTES[precision][0]


def grad_bytes(trainable: int, precision: Precision) -> float:
    return trainable * STATE_BYTES[precision][1]


def adam_bytes(trainable: int, precision: Precision) -> float:
    """Adam's first and second moments, m and v."""
    return trainable * STATE_BYTES[precision][2]


def master_bytes(trainable: int, precision: Precision) -> float:
    """The fp32 copy of the trained weights that mixed-precision optimizers update."""
    return trainable * STATE_BYTES[precision][3]


def activation_dtype_bytes(precision: Precision) -> int:
    return 4 if precision == "fp32" else 2


def autocast_copy_bytes(params: int, precision: Precision) -> float:
    """Under autocast the fp32 weights are cast to 16 bits once per forward and cached: 2 bytes each."""
    return params * 2 if precision == "amp" else 0.0


def mlp_saved_per_token(shape: ModelShape) -> int:
    """c_mlp · I: MLP elements a layer saves for backward, per token."""
    if shape.layout == "llama":
        return 4 * shape.intermediate
    composed = shape.activation in ("gelu_new", "gelu_fast", "quick_gelu")
    return (5 if composed else 2) * shape.intermediate


def layer_saved_per_token(shape: ModelShape, lora: tuple[int, tuple[str, ...]] | None = None) -> int:
    """Elements one block saves for backward, per token (no checkpointing).

    `lora = (rank, targets)`: the base weights are frozen, and a frozen linear saves nothing (its
    input is only needed for its weight's gradient), a frozen RMSNorm only its input. What stays:
    the inputs of non-linear ops (SDPA's q, k, v, output; the MLP's gate, up and activation),
    norm outputs that feed an adapted linear, and each adapter's rank-r intermediate.
    Measured (Llama, q/v adapters): 15.2h per token against 21.0h for full fine-tuning.
    """
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    full = 8 * h + 2 * kv + mlp_saved_per_token(shape)
    if lora is None:
        return full
    rank, targets = lora
    adapters = rank * sum(len(shape.linear_shapes()[t]) for t in targets)
    if shape.layout == "llama":
        norms = 2 * h + h * any(t in targets for t in ("q_proj", "k_proj", "v_proj")) + h * any(t in targets for t in ("gate_proj", "up_proj"))
        return norms + 2 * h + 2 * kv + 3 * i + i * ("down_proj" in targets) + adapters
    # GPT-2: LayerNorm saves its input either way; frozen linears drop their inputs
    dropped = h * ("c_attn" not in targets) + (h + i) * ("c_proj" not in targets) + h * ("c_fc" not in targets)
    return full - dropped + adapters


def outside_saved_per_token(shape: ModelShape, lora: bool = False) -> int:
    """Elements saved outside the blocks (embedding output, final norm), per token; with a frozen
    final norm and LM head, 2h less (measured 3.1h → 1.1h for Llama)."""
    full = (3 if shape.layout == "llama" else 2) * shape.hidden
    return max(full - 2 * shape.hidden, shape.hidden) if lora else full


def activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, checkpointing: bool,
                     lora: tuple[int, tuple[str, ...]] | None = None) -> float:
    """Bytes saved for backward by one forward over `tokens` = micro-batch × sequence length.

    With gradient checkpointing each block keeps only its input (h per token) and one block's
    full set exists again while it is recomputed in the backward pass.
    """
    layer = layer_saved_per_token(shape, lora)
    per_token = shape.n_layers * shape.hidden + layer if checkpointing else shape.n_layers * layer
    saved = tokens * (per_token + outside_saved_per_token(shape, lora is not None)) * dtype_bytes
    return saved + norm_upcast_bytes(shape, tokens, dtype_bytes, 1 if checkpointing else shape.n_layers)


def norm_upcast_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, layers: int) -> float:
    """HF's RMSNorm computes in fp32: at 16 bits each norm saves its input as an fp32 copy, 2 bytes
    per element more than the count above (two norms per layer and the final one; measured on a
    bf16 Llama: −10.6 % without this term, −0.7 % with it)."""
    if shape.layout != "llama" or dtype_bytes != 2:
        return 0.0
    return tokens * (2 * layers + 1) * shape.hidden * 2


def forward_transient_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> float:
    """A forward without gradients keeps no activations; its largest moment is one block's MLP,
    which holds about what that MLP saves for backward (c_mlp·I) plus the residual stream (h).
    Measured: GPT-2 with gelu_new 21.1h per token (c_mlp·I + h = 21h), SmolLM2 12.0h (11.7h)."""
    return tokens * (mlp_saved_per_token(shape) + shape.hidden) * dtype_bytes


# Logits. rlhfkit's logprobs and entropy (algos/logprobs.py) work on fp32 (B, Tr, V) copies of the
# response logits: temperature-scaled logits for log p, and for the entropy another scaled copy, its
# softmax, and the -inf-masked copy. Counted in units of one fp32 (B, Tr, V) tensor:
LOGIT_COPIES_NO_GRAD = 4  # alive at once in a forward under no_grad (experience phase)
LOGIT_COPIES_REF = 2  # reference logprobs only: the scaled copy and logsumexp's exp
LOGIT_COPIES_SAVED = 4.25  # saved for backward by logprobs + entropy: 4 copies and a bool mask (1 byte)
LOGIT_COPIES_BACKWARD = 8.25  # that path's backward at its peak: the 4.25 saved + 4 gradients
# Without an entropy bonus (ppo.entropy_coef 0, the default) the update computes the entropy outside
# the graph (models/actor_critic.py): logprobs alone save 1 copy and peak at 4 in their backward
# (measured with LiveBytes on a (8, 24, 4096) logits path, as the ones above).
# Half-precision logits go row by row in fp32 (algos/logprobs.py), so that backward peaks at 1.25.
LOGIT_COPIES_SAVED_NO_ENTROPY = 1.0
LOGIT_COPIES_BACKWARD_NO_ENTROPY = 4.0
LOGIT_COPIES_BACKWARD_NO_ENTROPY_HALF = 1.25
# SFT (algos/losses.sft_loss): the shifted logits' contiguous fp32 copy, cross-entropy's log-softmax
# (saved), and in the backward their gradient: at most 3 fp32 (B, T, V) tensors at once (measured)
SFT_LOGIT_COPIES = 3


def logits_bytes(rows: int, seq: int, vocab: int, dtype_bytes: int) -> float:
    """The model's output logits, (B, T, V), in the activation dtype."""
    return rows * seq * vocab * dtype_bytes


def logit_copies_bytes(rows: int, response: int, vocab: int, copies: float) -> float:
    """`copies` fp32 (B, Tr, V) working tensors of the log-softmax / entropy path."""
    return copies * rows * response * vocab * 4


def kv_cache_bytes(shape: ModelShape, rows: int, seq: int, dtype_bytes: int) -> float:
    """Keys and values of every layer for `rows` sequences of `seq` tokens: 2·L·B·T·kv·bytes.

    Hugging Face models build this cache in every eval-mode forward unless it is called with
    use_cache=False — rlhfkit's experience forwards included — so it counts there too."""
    return 2 * shape.n_layers * rows * seq * shape.kv_dim * dtype_bytes


def sampling_bytes(rows: int, vocab: int) -> float:
    """One decoding step's last-position logits and the sampler's fp32 copies of them (≈ 4)."""
    return 4 * rows * vocab * 4


def rollout_buffer_bytes(rows: int, seq: int) -> float:
    """The Rollout's per-token tensors (ids, masks, logprobs, ref logprobs, values, KL, rewards,
    advantages, returns, entropy): about 12 int64/fp32 values per token."""
    return 12 * rows * seq * 8
