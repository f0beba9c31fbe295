"""From a validated RunConfig (plus what the config cannot say yet) to the planner's inputs.

Model shapes come from each model's local config.json, the bundled task's base-model spec when
the task builds the model, or a `--model` preset for every model at once. Distributed settings
(ZeRO stage, FSDP, device count, offload) come from the accelerate launcher, not the YAML, so
they arrive as `PlanOverrides` (the `rlhfkit plan` flags).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import RunConfig
from rlhfkit.memory.plan import PlanInputs, Settings, Stage
from rlhfkit.memory.shapes import ModelShape, load_shape
from rlhfkit.memory.terms import Precision


@dataclass(frozen=True)
class PlanOverrides:
    """What the config cannot say (yet): the launcher's settings and quick what-ifs."""

    model: str | None = None  # preset or local dir for every model
    n_devices: int | None = None
    zero_stage: int | None = None
    fsdp: bool = False
    offload_optimizer: bool = False
    offload_frozen: bool = False
    gradient_checkpointing: bool = False
    precision: Precision | None = None
    device: str = "cuda"  # "cuda" or "cpu": the kind of device the plan is for


def _task_shape(cfg: RunConfig) -> ModelShape:
    """The bundled task's base model (GPT-2 layout with HF's default gelu_new), from its spec."""
    from rlhfkit.tasks.fortunes.base_model import BaseModelSpec

    spec = BaseModelSpec.quick() if cfg.task.base_model == "quick" else BaseModelSpec.default()
    return ModelShape(f"fortunes {cfg.task.base_model} base", "gpt2", spec.n_layer, spec.n_embd, spec.n_head, spec.n_head,
                      4 * spec.n_embd, spec.vocab_size, spec.n_positions, True, "gelu_new")


class _Missing:
    """A model whose shape is not known; planning a stage that needs it raises its reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _shape(source: str | None, where: str, fallback: ModelShape | _Missing) -> ModelShape | _Missing:
    if source:
        try:
            return load_shape(source, where)
        except ValueError as err:
            # a path that a previous stage of this run will write is planned as that stage's model
            return fallback if isinstance(fallback, ModelShape) else _Missing(str(err))
    return fallback


def _shapes(cfg: RunConfig, model: str | None) -> dict[str, ModelShape | _Missing]:
    """Shapes of the SFT model, the RM, the PPO policy, reward model and critic, following
    `rlhfkit run`'s rule that an empty model path means the previous stage's output."""
    if model:
        try:
            shape: ModelShape | _Missing = load_shape(model, "--model")
        except ValueError as err:
            shape = _Missing(str(err))
        return dict.fromkeys(("sft", "rm", "policy", "reward", "critic"), shape)
    none = _Missing("no model to plan for: give the stage's model name_or_path (a local directory), a task, or --model PRESET")
    base = _task_shape(cfg) if cfg.task is not None else none
    sft = _shape(cfg.sft.model.name_or_path, "sft.model", base)
    rm = _shape(cfg.rm.model.name_or_path, "rm.model", sft)
    policy = _shape(cfg.ppo.policy.name_or_path, "ppo.policy", sft)
    paths = cfg.ppo.reward.model_paths
    reward = _shape(paths[0] if paths else None, "ppo.reward.model_paths[0]", rm if isinstance(rm, ModelShape) else policy)
    # stages/ppo.py: the critic starts from the reward model when it shares the policy's vocabulary
    same_vocab = isinstance(reward, ModelShape) and isinstance(policy, ModelShape) and reward.vocab == policy.vocab
    critic = _shape(cfg.ppo.value_model.name_or_path, "ppo.value_model", reward if same_vocab else policy)
    return {"sft": sft, "rm": rm, "policy": policy, "reward": reward, "critic": critic}


def _known(shapes: dict[str, ModelShape | _Missing], *names: str) -> list[ModelShape]:
    for name in names:
        if isinstance(shapes[name], _Missing):
            raise ConfigError(shapes[name].reason)
    return [shapes[name] for name in names]


def _precision(dtype: str, mixed_precision: str, zero_stage: int, device: str) -> Precision:
    if dtype == "auto":  # as models/load.py::resolve_dtype: bf16 on a GPU, fp32 on CPU
        dtype = "bf16" if device == "cuda" else "fp32"
    if dtype != "fp32":
        return "mixed" if zero_stage > 0 else "half"  # DeepSpeed keeps fp32 master weights; torch AdamW does not
    return "amp" if mixed_precision != "no" else "fp32"


def _reward_models(cfg: RunConfig) -> int:
    if cfg.ppo.reward.callable:
        return 0
    if cfg.ppo.reward.model_paths:
        return len(cfg.ppo.reward.model_paths)
    return cfg.rm.ensemble_size if "rm" in cfg.stages else 1


def plan_inputs_from_config(cfg: RunConfig, stage: Stage, overrides: PlanOverrides = PlanOverrides()) -> PlanInputs:
    """The planner's inputs for one stage of `cfg`, with the launcher settings in `overrides`."""
    shapes = _shapes(cfg, overrides.model)
    zero = 3 if overrides.fsdp else (overrides.zero_stage or 0)
    n = overrides.n_devices or 1
    section_checkpointing = cfg.ppo.gradient_checkpointing if stage == "ppo" else \
        (cfg.sft if stage == "sft" else cfg.rm).optim.gradient_checkpointing
    checkpointing = overrides.gradient_checkpointing or section_checkpointing
    device = "cpu" if overrides.device == "cpu" else "cuda"
    common = dict(device=device, n_devices=n, zero_stage=zero, offload_optimizer=overrides.offload_optimizer,
                  offload_frozen=overrides.offload_frozen, gradient_checkpointing=checkpointing)
    if stage == "ppo":
        ppo = cfg.ppo
        settings = Settings(
            precision=overrides.precision or _precision(ppo.policy.dtype, cfg.mixed_precision, zero, device),
            lora_rank=ppo.lora.r if ppo.lora else None,
            lora_targets=tuple(ppo.lora.target_modules) if ppo.lora and ppo.lora.target_modules else None,
            shared_value_head=ppo.value_head == "shared", entropy_bonus=ppo.entropy_coef > 0,
            value_lora_rank=ppo.value_lora.r if ppo.value_lora else None,
            value_lora_targets=tuple(ppo.value_lora.target_modules) if ppo.value_lora and ppo.value_lora.target_modules
            else None,
            reward_models=_reward_models(cfg),
            rollout_batch=ppo.batch_size, mini_batch=ppo.mini_batch_size, grad_accum=ppo.gradient_accumulation_steps,
            micro_batch_tokens=ppo.micro_batch_tokens, prompt_len=ppo.generation.max_prompt_length, response_len=ppo.generation.max_new_tokens, **common)
        policy, critic = _known(shapes, "policy", "critic")
        reward = _known(shapes, "reward")[0] if settings.reward_models else policy
        return PlanInputs("ppo", policy, reward, critic, settings)
    section = cfg.sft if stage == "sft" else cfg.rm
    shape = _known(shapes, stage)[0]
    settings = Settings(
        precision=overrides.precision or _precision(section.model.dtype, cfg.mixed_precision, zero, device),
        mini_batch=section.optim.batch_size, grad_accum=section.optim.gradient_accumulation_steps,
        prompt_len=0, response_len=min(section.data.max_length, shape.max_positions), reward_models=0, **common)
    return PlanInputs(stage, shape, shape, shape, settings)


def with_settings(inputs: PlanInputs, **changes) -> PlanInputs:
    return replace(inputs, settings=replace(inputs.settings, **changes))
