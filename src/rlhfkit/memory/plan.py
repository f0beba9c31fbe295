"""The four-model memory plan: per phase, the bytes each model's terms take on one device.

PPO runs in three phases, and a device must hold the largest of them (OpenRLHF and DeepSpeed-Chat
split their step the same way):

    generation   the policy samples `rollout_batch` responses: every resident model state, the
                 policy's KV cache at full length and the sampler's last-position logits;
    experience   no-grad forwards, `mini_batch` rows at a time, without KV cache: policy logprobs and
                 entropy (response-position logits plus fp32 working copies), reference logprobs,
                 critic values, reward scores;
    update       forward + backward + AdamW step on `mini_batch` rows: saved activations of policy
                 and critic, the logits path's backward, gradients, moments, master weights.

Resident model states: the policy (trained), the reference (frozen; none with LoRA, where it is
the policy with adapters off), K reward models (frozen, ensemble size K; none for a Python
reward), the critic (trained; none with a shared value head, which trains on the policy).
Sharding (ZeRO stage s over N devices; FSDP full-shard = stage 3): s ≥ 1 divides optimizer states
and master weights by N, s ≥ 2 also gradients, s = 3 also weights — of the frozen models too, as
DeepSpeed-Chat's ZeRO-3 inference engines do — plus two gathered layers in flight.
SFT and RM stages have one phase, `update`, for their one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from rlhfkit.memory import terms as t
from rlhfkit.memory.shapes import ModelShape

Stage = Literal["ppo", "sft", "rm"]


@dataclass(frozen=True)
class Settings:
    """The run's memory knobs (per process: rlhfkit's batch sizes are per process)."""

    precision: t.Precision = "fp32"
    n_devices: int = 1
    zero_stage: int = 0  # 0-3; FSDP full sharding plans as 3
    offload_optimizer: bool = False  # optimizer moments and master weights live in host RAM
    offload_frozen: bool = False  # reference and reward models live in host RAM outside the experience phase
    gradient_checkpointing: bool = False
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] | None = None
    shared_value_head: bool = False
    value_lora_rank: int | None = None  # ppo.value_lora: the critic's adapters and scalar head train
    value_lora_targets: tuple[str, ...] | None = None
    entropy_bonus: bool = False  # ppo.entropy_coef > 0: the entropy's softmax is in the update's graph
    reward_models: int = 1  # ensemble size; 0 for a Python reward callable
    rollout_batch: int = 64  # episodes generated at once (ppo.batch_size)
    mini_batch: int = 4  # rows per forward/backward (ppo.mini_batch_size; SFT/RM optim.batch_size)
    grad_accum: int = 16
    micro_batch_tokens: int | None = None  # ppo.micro_batch_tokens: packed micro-batches of ≤ this many real tokens
    prompt_len: int = 256
    response_len: int = 128  # SFT/RM: prompt_len = 0 and response_len = data.max_length
    device: Literal["cuda", "cpu"] = "cuda"  # the allowance differs (docs/memory.md)


def step_tokens(s: Settings) -> int:
    """Tokens of one optimiser step's rows (mini_batch × grad_accum) at the full width Tq + Tr."""
    return s.mini_batch * s.grad_accum * (s.prompt_len + s.response_len)


def ppo_micro_batch_tokens(s: Settings) -> tuple[int, int]:
    """(tokens through a model, response tokens among them) in one PPO micro-batch, at most.

    Padded: `mini_batch` rows of the full width Tq + Tr, Tr response slots each. Token budget K
    (training/micro_batches.py): one packed sequence of ≤ K real tokens — or a single row longer
    than K on its own, so ≤ max(K, Tq + Tr) tokens; as every row has at least one prompt token and at
    most Tr response tokens, ≤ max(Tr, ⌈K·Tr / (Tr + 1)⌉) of them are response tokens. Both are also
    bounded by the optimiser step's rows (mini_batch × grad_accum), which its micro-batches split."""
    seq, tr = s.prompt_len + s.response_len, s.response_len
    if s.micro_batch_tokens is None:
        return s.mini_batch * seq, s.mini_batch * tr
    budget, step_rows = s.micro_batch_tokens, s.mini_batch * s.grad_accum
    return min(max(budget, seq), step_tokens(s)), min(max(tr, -(-budget * tr // (tr + 1))), step_rows * tr)


def accumulates(s: Settings) -> bool:
    """Whether a micro-batch's backward can run with earlier micro-batches' gradients alive: with
    gradient accumulation, and under a token budget smaller than a step's rows at full width (the
    step is then split into several micro-batches, accumulated under no_sync, training/ppo_update.py)."""
    return s.grad_accum > 1 or (s.micro_batch_tokens is not None and s.micro_batch_tokens < step_tokens(s))


@dataclass(frozen=True)
class PlanInputs:
    stage: Stage
    policy: ModelShape  # SFT: the model; RM: the reward model being trained
    reward: ModelShape
    critic: ModelShape
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Term:
    model: str  # policy, reference, reward, critic, run
    name: str
    bytes: float  # per device
    formula: str


@dataclass(frozen=True)
class Phase:
    name: str
    terms: tuple[Term, ...]

    @property
    def total(self) -> float:
        return sum(term.bytes for term in self.terms)

    def largest(self) -> Term:
        return max(self.terms, key=lambda term: term.bytes)


@dataclass(frozen=True)
class MemoryPlan:
    inputs: PlanInputs
    phases: tuple[Phase, ...]
    host: tuple[Term, ...]  # what offloading puts in host RAM (per process)

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda phase: phase.total)


def _count(n: float) -> str:
    """1.33M, 70.6B: parameter counts as people say them."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


@dataclass(frozen=True)
class _States:
    """One model's states on a device and in host RAM, after sharding and offload."""

    device: tuple[Term, ...]
    grads: tuple[Term, ...]  # only during the update
    host: tuple[Term, ...]


def _model_states(role: str, params: int, trainable: int, s: Settings, frozen_offloadable: bool) -> _States:
    p = s.precision
    n = s.n_devices
    w_div = n if s.zero_stage >= 3 else 1
    g_div = n if s.zero_stage >= 2 else 1
    o_div = n if s.zero_stage >= 1 else 1
    bytes_w = t.STATE_BYTES[p][0]
    weights = Term(role, "weights", t.weight_bytes(params, p) / w_div,
                   f"{_count(params)} × {bytes_w} B" + (f" / {n} (ZeRO-3)" if w_div > 1 else ""))
    device, host = [weights], []
    if frozen_offloadable and s.offload_frozen:
        device, host = [], [weights]
    if trainable == 0:
        return _States(tuple(device), (), tuple(host))
    trained = f"{_count(trainable)} trained"
    optimizer = [Term(role, "Adam m, v", t.adam_bytes(trainable, p) / o_div,
                      f"{trained} × {t.STATE_BYTES[p][2]} B" + (f" / {n}" if o_div > 1 else ""))]
    if t.STATE_BYTES[p][3]:
        optimizer.append(Term(role, "fp32 master", t.master_bytes(trainable, p) / o_div,
                              f"{trained} × 4 B" + (f" / {n}" if o_div > 1 else "")))
    if s.offload_optimizer:
        host += optimizer
    else:
        device += optimizer
    grads = (Term(role, "gradients", t.grad_bytes(trainable, p) / g_div,
                  f"{trained} × {t.STATE_BYTES[p][1]} B" + (f" / {n}" if g_div > 1 else "")),)
    return _States(tuple(device), grads, tuple(host))


def _policy_params(inputs: PlanInputs) -> tuple[int, int]:
    """(all parameters incl. adapters and a shared head, trainable parameters) of the policy."""
    s, shape = inputs.settings, inputs.policy
    base = shape.n_params() if inputs.stage != "rm" else shape.scalar_head_params()
    adapters = shape.lora_params(s.lora_rank, s.lora_targets) if s.lora_rank else 0
    head = shape.hidden + 1 if (inputs.stage == "ppo" and s.shared_value_head) else 0
    trainable = adapters + head if s.lora_rank else base + head
    return base + adapters + head, trainable


def _resident(inputs: PlanInputs) -> tuple[list[_States], list[Term]]:
    """Model states of every model the stage holds, and their host-RAM part."""
    s = inputs.settings
    total, trainable = _policy_params(inputs)
    role = {"ppo": "policy", "sft": "model", "rm": "reward model"}[inputs.stage]
    states = [_model_states(role, total, trainable, s, frozen_offloadable=False)]
    if inputs.stage == "ppo":
        if not s.lora_rank:
            states.append(_model_states("reference", inputs.policy.n_params(), 0, s, frozen_offloadable=True))
        for k in range(s.reward_models):
            name = "reward" if s.reward_models == 1 else f"reward #{k + 1}"
            states.append(_model_states(name, inputs.reward.scalar_head_params(), 0, s, frozen_offloadable=True))
        if not s.shared_value_head:
            critic = inputs.critic.scalar_head_params()
            if s.value_lora_rank:  # frozen backbone; adapters plus peft's trained copy of the (hidden → 1) head
                trained = inputs.critic.lora_params(s.value_lora_rank, s.value_lora_targets) + inputs.critic.hidden
                states.append(_model_states("critic", critic + trained, trained, s, frozen_offloadable=False))
            else:
                states.append(_model_states("critic", critic, critic, s, frozen_offloadable=False))
    return states, [term for st in states for term in st.host]


def _gathered_layers(inputs: PlanInputs) -> list[Term]:
    """ZeRO-3 gathers each layer's full weights before using it; two are in flight (prefetch)."""
    s = inputs.settings
    if s.zero_stage < 3 or s.n_devices == 1:
        return []
    layer = inputs.policy.layer_params() * t.STATE_BYTES[s.precision][0]
    return [Term("run", "ZeRO-3 gathered", 2 * layer, "2 layers' weights")]


def _autocast(inputs: PlanInputs, params: int) -> list[Term]:
    b = t.autocast_copy_bytes(params, inputs.settings.precision)
    return [Term("policy", "autocast copies", b, "params × 2 B")] if b else []


def _generation(inputs: PlanInputs, resident: list[Term]) -> Phase:
    """The larger of the prefill (the prompts' cache and one block's working set) and the last
    decoding step (the full cache and the sampler's last-position logits)."""
    s, shape = inputs.settings, inputs.policy
    seq, rows, act = s.prompt_len + s.response_len, s.rollout_batch, t.activation_dtype_bytes(s.precision)
    prefill = (t.kv_cache_bytes(shape, rows, s.prompt_len, act) + t.forward_transient_bytes(shape, rows * s.prompt_len, act))
    full = t.kv_cache_bytes(shape, rows, seq, act) + t.sampling_bytes(rows, shape.vocab)
    if prefill > full:
        working = [Term("policy", "prefill: prompt KV cache + block", prefill, f"2·L·B·Tq·kv + B·Tq·(c·I+h), × {act} B, B={rows}")]
    else:
        working = [Term("policy", "KV cache", t.kv_cache_bytes(shape, rows, seq, act), f"2·L·B·T·kv × {act} B, B={rows} T={seq}"),
                   Term("policy", "sampler logits", t.sampling_bytes(rows, shape.vocab), "4·B·V × 4 B")]
    return Phase("generation", (*resident, *_autocast(inputs, _policy_params(inputs)[0]), *_gathered_layers(inputs), *working))


def _experience(inputs: PlanInputs, resident: list[Term], offloaded: list[Term]) -> Phase:
    s, shape = inputs.settings, inputs.policy
    seq, act = s.prompt_len + s.response_len, t.activation_dtype_bytes(s.precision)
    tokens, response = ppo_micro_batch_tokens(s)
    # The LM head runs on the response positions only (exactly Tr of them since the fused log-prob pass;
    # counted here as Tr + 1 per padded row, as calibrated, a slight over-estimate), and no forward
    # builds a KV cache (use_cache=False, models/actor_critic.py and models/scoring.py).
    head = s.mini_batch * (s.response_len + 1) if s.micro_batch_tokens is None else response
    logits = t.logits_bytes(1, head, shape.vocab, act)

    def forward(model: ModelShape, n: int) -> float:
        return t.forward_transient_bytes(model, n, act)

    policy = logits + max(forward(shape, tokens) - logits, t.logit_copies_bytes(1, response, shape.vocab, t.LOGIT_COPIES_NO_GRAD), 0)
    if s.shared_value_head:  # the ActorCritic forward keeps the output's hidden states (output_hidden_states)
        policy += (shape.n_layers + 1) * tokens * shape.hidden * act
    reference = logits + max(forward(shape, tokens) - logits, t.logit_copies_bytes(1, response, shape.vocab, t.LOGIT_COPIES_REF), 0)
    critic = forward(inputs.critic, tokens)
    # the reward models score padded rows of the rollout: planned as 4 × mini_batch rows, as calibrated
    # (RewardModelEnsemble takes ppo.reward.batch_size rows a forward, 64 by default)
    reward = forward(inputs.reward, 4 * s.mini_batch * seq) if s.reward_models else 0.0
    batch = f"B={s.mini_batch} T={seq}" if s.micro_batch_tokens is None else f"packed N={tokens}"
    where = f"{batch} V={shape.vocab}"
    candidates = [Term("policy", "forward: logits + fp32 copies", policy, where),
                  Term("reference", "forward: logits + fp32 copies", reference, where),
                  Term("critic", "forward", critic, batch),
                  Term("reward", "forward", reward, f"B={4 * s.mini_batch} T={seq}")]
    largest = max(candidates, key=lambda term: term.bytes)  # the forwards run one after another
    frozen_back = tuple(replace(term, name=term.name + " (from host)") for term in offloaded
                        if term.model.startswith(("reference", "reward")))
    return Phase("experience", (*resident, *frozen_back, *_autocast(inputs, _policy_params(inputs)[0]),
                                *_gathered_layers(inputs),
                                Term("run", "rollout buffers", t.rollout_buffer_bytes(s.rollout_batch, seq), "12·B·T × 8 B"),
                                largest))


def _activations(inputs: PlanInputs, role: str, shape: ModelShape, tokens: int) -> Term:
    s = inputs.settings
    act = t.activation_dtype_bytes(s.precision)
    rank, targets = {"policy": (s.lora_rank, s.lora_targets), "critic": (s.value_lora_rank, s.value_lora_targets)}.get(
        role, (None, None))
    lora = (rank, targets or shape.default_lora_targets()) if rank else None
    per_layer = shape.hidden if s.gradient_checkpointing else t.layer_saved_per_token(shape, lora)
    name = "activations (checkpointed)" if s.gradient_checkpointing else "activations"
    return Term(role, name, t.activation_bytes(shape, tokens, act, s.gradient_checkpointing, lora),
                f"{tokens} tokens × {act} B × (L·{per_layer} + …)")


def _backward_moments(inputs: PlanInputs, grads: dict[str, list[Term]]) -> list[list[Term]]:
    """Candidate peaks of one micro-batch's forward + backward (gradients of earlier micro-batches
    are alive when it accumulates). PPO: the critic's forward runs after the policy's, so autograd
    walks the critic first — at the start, both models' activations and the saved logits path are
    alive; then the policy's logits backward peaks with the critic's activations gone and its
    gradients made."""
    s = inputs.settings
    accumulating = accumulates(s) if inputs.stage == "ppo" else s.grad_accum > 1
    accumulated = [g for terms in grads.values() for g in terms] if accumulating else []
    seq = s.prompt_len + s.response_len
    if inputs.stage == "rm":  # chosen and rejected rows, both graphs alive until the backward
        return [[*accumulated, _activations(inputs, "reward model", inputs.policy, 2 * s.mini_batch * seq)]]
    if inputs.stage == "sft":  # algos/losses.sft_loss: the shifted fp32 copy, its log-softmax, their gradients
        act = t.activation_dtype_bytes(s.precision)
        half_logits = t.logits_bytes(s.mini_batch, seq, inputs.policy.vocab, act) if act == 2 else 0.0
        loss = Term("model", "logits + loss copies", half_logits + t.logit_copies_bytes(s.mini_batch, seq, inputs.policy.vocab,
                    t.SFT_LOGIT_COPIES), f"{t.SFT_LOGIT_COPIES}·B·T·V × 4 B" + (" + B·T·V × 2 B" if half_logits else ""))
        return [[*accumulated, _activations(inputs, "model", inputs.policy, s.mini_batch * seq), loss]]
    tokens, response = ppo_micro_batch_tokens(s)
    vocab = inputs.policy.vocab
    policy = _activations(inputs, "policy", inputs.policy, tokens)
    half = t.activation_dtype_bytes(s.precision) == 2
    saved_copies, backward_copies = ((t.LOGIT_COPIES_SAVED, t.LOGIT_COPIES_BACKWARD) if s.entropy_bonus else
                                     (t.LOGIT_COPIES_SAVED_NO_ENTROPY, t.LOGIT_COPIES_BACKWARD_NO_ENTROPY_HALF if half
                                      else t.LOGIT_COPIES_BACKWARD_NO_ENTROPY))
    slots = "B·Tr" if s.micro_batch_tokens is None else "M"  # M: the packed micro-batch's response tokens
    saved = Term("policy", "logits path (saved)", t.logit_copies_bytes(1, response, vocab, saved_copies),
                 f"{saved_copies}·{slots}·V × 4 B")
    backward = Term("policy", "logits path (backward)", t.logit_copies_bytes(1, response, vocab, backward_copies),
                    f"{backward_copies}·{slots}·V × 4 B")
    if s.shared_value_head:
        return [[*accumulated, policy, backward]]
    critic = _activations(inputs, "critic", inputs.critic, tokens)
    critic_grads = [] if accumulating else grads.get("critic", [])
    return [[*accumulated, policy, saved, critic], [*accumulated, *critic_grads, policy, backward]]


def _update(inputs: PlanInputs, states: list[_States]) -> Phase:
    """The largest moment of the update: a backward moment (_backward_moments) or the optimizer
    step (every gradient, no activations)."""
    s = inputs.settings
    resident = [term for st in states for term in st.device]
    by_model: dict[str, list[Term]] = {}
    for st in states:
        for g in st.grads:
            by_model.setdefault(g.model, []).append(g)
    extra = [*_autocast(inputs, _policy_params(inputs)[0]), *_gathered_layers(inputs)]
    if inputs.stage == "ppo":
        seq = s.prompt_len + s.response_len
        extra.append(Term("run", "rollout buffers", t.rollout_buffer_bytes(s.rollout_batch, seq), "12·B·T × 8 B"))
    # rlhfkit's AdamW is fused on CPU and CUDA (training/loop.py::make_adamw): it updates in place, no scratch
    step = [g for terms in by_model.values() for g in terms]
    moments = [*_backward_moments(inputs, by_model), step]
    largest = max(moments, key=lambda terms: sum(x.bytes for x in terms))
    name = "update (optimizer step)" if largest is step else "update"
    return Phase(name, (*resident, *extra, *largest))


def plan_memory(inputs: PlanInputs) -> MemoryPlan:
    """Per-phase, per-device memory of the stage under its settings."""
    states, host = _resident(inputs)
    resident = [term for st in states for term in st.device]
    if inputs.stage != "ppo":
        return MemoryPlan(inputs, (_update(inputs, states),), tuple(host))
    phases = (_generation(inputs, resident), _experience(inputs, resident, host), _update(inputs, states))
    return MemoryPlan(inputs, phases, tuple(host))
