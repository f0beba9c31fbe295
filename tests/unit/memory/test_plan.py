"""Per-phase plans against hand sums, the seed's table, fitting, device counts, advice, config mapping."""

from dataclasses import replace

import pytest

from rlhfkit.config import load_config
from rlhfkit.config.load import default_config_path
from rlhfkit.memory.advice import advise, best_fix, fits, min_devices, needed, seed_table
from rlhfkit.memory.inputs import PlanOverrides, plan_inputs_from_config, with_settings
from rlhfkit.memory.plan import PlanInputs, Settings, Term, _backward_moments, accumulates, plan_memory
from rlhfkit.memory.shapes import PRESETS, ModelShape

GB = 1e9
# P = 2·512·128 (untied embeddings + head) + 2 · 196,864 (per layer: 2·128² + 2·128·64 + 3·128·384 + 2·128) + 128
SMALL = ModelShape("small", "llama", 2, 128, 4, 2, 384, 512, 256, False)
P = 524_928


def _small(**settings) -> PlanInputs:
    base = dict(precision="fp32", device="cpu", shared_value_head=True, reward_models=0, rollout_batch=8, mini_batch=4,
                grad_accum=1, prompt_len=16, response_len=16)
    return PlanInputs("ppo", SMALL, SMALL, SMALL, Settings(**{**base, **settings}))


def test_small_plan_by_hand():
    assert SMALL.n_params() == P
    plan = plan_memory(_small())
    # resident: policy + shared head (P + 129) × (4 weights + 8 Adam) + reference P × 4 = 8,400,396
    resident = (P + 129) * 12 + P * 4
    gen, exp, upd = plan.phases
    # generation: the prefill is larger than the last step: prompt KV 2·2·8·16·64·4 = 131,072 plus one
    # MLP's working set 128 tokens × (4·384 + 128) × 4 = 851,968 (the full cache 262,144 + sampler 65,536)
    assert gen.total == resident + 131_072 + 851_968
    # update (backward moment, shared head): activations (2·2688 + 384)·128·4 = 2,949,120, logits path
    # without an entropy bonus 4 · 4·16·512·4 = 524,288, rollout buffers 12·8·32·8 = 24,576
    assert upd.name == "update"
    assert upd.total == resident + 2_949_120 + 524_288 + 24_576
    assert plan.peak is upd
    # with an entropy bonus the entropy's softmax is in the graph: 8.25 · 4·16·512·4 = 1,081,344
    bonus = plan_memory(_small(entropy_bonus=True)).phases[2]
    assert bonus.total == resident + 2_949_120 + 1_081_344 + 24_576


def test_broken_variant_summing_every_phase_overstates_the_peak():
    plan = plan_memory(_small())
    resident = (P + 129) * 12 + P * 4
    naive = resident + sum(p.total - resident for p in plan.phases)  # generation + experience + update at once
    assert naive > 1.15 * plan.peak.total


def test_lora_drops_the_reference_and_most_optimizer_state():
    full, lora = plan_memory(_small()), plan_memory(_small(lora_rank=8))
    lora_weights = {(t.model, t.name): t.bytes for t in lora.phases[0].terms}
    assert ("reference", "weights") not in lora_weights
    # adapters on q, v: 8·(128 + 128) + 8·(128 + 64) per layer × 2 layers = 7,168; trainable = 7,168 + 129
    assert lora_weights[("policy", "Adam m, v")] == (7_168 + 129) * 8
    assert lora.peak.total < full.peak.total


def test_value_lora_keeps_adam_state_for_the_critics_adapters_and_head_only():
    full = plan_memory(_small(shared_value_head=False))
    lora = plan_memory(_small(shared_value_head=False, value_lora_rank=8))
    terms = {(t.model, t.name): t.bytes for t in lora.phases[0].terms}
    full_terms = {(t.model, t.name): t.bytes for t in full.phases[0].terms}
    # the critic: P − LM head 512·128 + score head 128 = 459,520 parameters; trained with adapters on q, v
    # 7,168 + peft's copy of the 128-weight head = 7,296, Adam 8 B each; weights hold both
    assert full_terms[("critic", "Adam m, v")] == 459_520 * 8
    assert terms[("critic", "Adam m, v")] == 7_296 * 8
    assert terms[("critic", "weights")] == (459_520 + 7_296) * 4
    assert ("reference", "weights") in terms  # the policy is trained in full: its reference stays
    assert lora.peak.total < full.peak.total


def test_seed_table_for_70b_is_the_seeds_840_gb():
    # Llama-3-70B: 70,553,706,496 parameters; 4 + 2 + 2 + 4 bytes each = 847 GB (the seed: ~840 GB)
    inputs = PlanInputs("ppo", PRESETS["70b"], PRESETS["70b"], PRESETS["70b"])
    assert PRESETS["70b"].n_params() == 70_553_706_496
    table = seed_table(inputs)
    assert table["policy (training)"] / GB == pytest.approx(282.2, abs=0.1)
    assert table["reference"] / GB == pytest.approx(141.1, abs=0.1)
    assert sum(table.values()) / GB == pytest.approx(840, rel=0.01)


def test_full_accounting_for_70b_far_exceeds_the_seed():
    inputs = PlanInputs("ppo", PRESETS["70b"], PRESETS["70b"], PRESETS["70b"], Settings(precision="mixed"))
    plan = plan_memory(inputs)
    # 16 bytes per trained parameter (policy and critic) + 2 per frozen one, before any activation
    assert plan.peak.total > (16 + 16 + 2 + 2) * 69.5e9


def test_fits_and_smallest_device_count():
    inputs = PlanInputs("ppo", PRESETS["70b"], PRESETS["70b"], PRESETS["70b"],
                        Settings(precision="mixed", zero_stage=3, n_devices=8, gradient_checkpointing=True))
    capacity = 80 * 2**30
    n = min_devices(inputs, capacity, "cuda")
    assert n is not None and n > 8
    assert fits(plan_memory(with_settings(inputs, n_devices=n)), capacity, "cuda")
    assert not fits(plan_memory(with_settings(inputs, n_devices=n - 1)), capacity, "cuda")
    assert min_devices(with_settings(inputs, zero_stage=0), capacity, "cuda") is None  # replicas never fit


def test_advice_on_cpu_leaves_out_offload_and_lists_a_fix():
    inputs = PlanInputs("sft", PRESETS["7b"], PRESETS["7b"], PRESETS["7b"], Settings(precision="fp32", device="cpu",
                                                                                      mini_batch=4, response_len=512))
    single, combined = advise(inputs, 24e9, "cpu")
    assert single and all("host RAM" not in a.label for a in single)
    assert combined[-1].needed <= min(a.needed for a in single)  # the changes add up
    fix = best_fix(inputs, 24e9, "cpu")
    assert fix is not None and fix.needed < needed(plan_memory(inputs), "cpu")


def test_a_budget_that_splits_a_step_keeps_earlier_gradients_alive():
    base = dict(mini_batch=4, grad_accum=1, prompt_len=16, response_len=16)  # a step: 4 rows × 32 = 128 tokens
    assert not accumulates(Settings(**base)) and not accumulates(Settings(**base, micro_batch_tokens=128))
    assert accumulates(Settings(**base, micro_batch_tokens=127))  # the step is cut in two: accumulated
    assert accumulates(Settings(**{**base, "grad_accum": 2}))
    # in the plan: the first backward moment then carries the gradients made so far
    grads = {"policy": [Term("policy", "gradients", 100.0, "")], "critic": [Term("critic", "gradients", 50.0, "")]}

    def first_moment_gradients(budget: int) -> float:
        moment = _backward_moments(_small(micro_batch_tokens=budget, shared_value_head=False), grads)[0]
        return sum(x.bytes for x in moment if x.name == "gradients")

    assert first_moment_gradients(64) == 150.0 and first_moment_gradients(128) == 0.0


def test_advice_under_a_token_budget_halves_the_budget_not_the_rows():
    inputs = _small(micro_batch_tokens=256, grad_accum=4, shared_value_head=False, rollout_batch=16)
    single, _ = advise(inputs, 1e6, "cpu")  # nothing fits in 1 MB: every lever is listed with its figure
    labels = [a.label for a in single]
    assert "token budget 256 → 128 (same step)" in labels
    assert not any(label.startswith("mini-batch") for label in labels)  # the step's rows are re-split anyway
    halved = next(a for a in single if a.label.startswith("token budget"))
    assert halved.needed < needed(plan_memory(inputs), "cpu")
    # a budget above what a step holds (16 rows × 32 = 512 tokens) is halved from what it can hold
    labels = [a.label for a in advise(replace(inputs, settings=replace(inputs.settings, micro_batch_tokens=4096)),
                                      1e6, "cpu")[0]]
    assert "token budget 4096 → 256 (same step)" in labels
    # at or below one row's width (32 tokens) a row goes alone: no budget change is offered
    tiny = replace(inputs, settings=replace(inputs.settings, micro_batch_tokens=32))
    assert not any(a.label.startswith("token budget") for a in advise(tiny, 1e6, "cpu")[0])


def test_plan_inputs_from_the_default_preset():
    cfg = load_config(default_config_path("default"))
    inputs = plan_inputs_from_config(cfg, "ppo")
    s = inputs.settings
    assert (inputs.policy.n_layers, inputs.policy.hidden, inputs.policy.vocab) == (4, 128, 4096)
    assert (s.rollout_batch, s.mini_batch, s.grad_accum, s.prompt_len, s.response_len) == (64, 16, 1, 32, 24)
    assert (s.precision, s.reward_models, s.shared_value_head, s.lora_rank) == ("fp32", 2, False, None)
    assert s.micro_batch_tokens == 640


def test_plan_inputs_follow_the_memory_knobs():
    cfg = load_config(default_config_path("default"), ["rm.ensemble_size=3", "ppo.value_head=shared", "ppo.lora.r=16",
                                                        "ppo.policy.dtype=bf16"])
    s = plan_inputs_from_config(cfg, "ppo", PlanOverrides(zero_stage=2, n_devices=4)).settings
    assert (s.reward_models, s.shared_value_head, s.lora_rank, s.zero_stage, s.n_devices) == (3, True, 16, 2, 4)
    assert s.precision == "mixed"  # bf16 weights under DeepSpeed keep fp32 master weights
    cfg = load_config(default_config_path("default"), ["mixed_precision=bf16"])
    assert plan_inputs_from_config(cfg, "sft").settings.precision == "amp"
    cfg = load_config(default_config_path("default"), ["ppo.reward.callable=os:getcwd"])
    assert plan_inputs_from_config(cfg, "ppo").settings.reward_models == 0


def test_token_budget_sizes_the_micro_batch_by_its_tokens_not_its_rows():
    def backward_start(**settings) -> dict:  # the first backward moment: activations + saved logits path
        terms = _backward_moments(_small(shared_value_head=False, rollout_batch=16, **settings), {})[0]
        return {(x.model, x.name): x.bytes for x in terms}

    per_token = (2 * 2688 + 384) * 4  # saved activations per token, as in test_small_plan_by_hand
    padded = backward_start()  # 4 rows × 32 tokens, 4 × 16 response slots
    assert padded[("policy", "activations")] == 128 * per_token
    assert padded[("policy", "logits path (saved)")] == 1 * 64 * 512 * 4
    # ppo.micro_batch_tokens = 256 over steps of 4 × 4 rows: one packed sequence of ≤ 256 tokens, of which
    # ≤ ⌈256·16/17⌉ = 241 are response tokens (every row has ≥ 1 prompt token and ≤ 16 response tokens)
    packed = backward_start(micro_batch_tokens=256, grad_accum=4)
    assert packed[("policy", "activations")] == 256 * per_token
    assert packed[("policy", "logits path (saved)")] == 1 * 241 * 512 * 4
    # a step of 4 rows (no accumulation) cannot fill 256 tokens: 4 × 32 = 128 at most, 64 response tokens
    assert backward_start(micro_batch_tokens=256) == padded
    # a budget below one row's width: that row alone, 32 tokens and ≤ 16 response tokens
    alone = backward_start(micro_batch_tokens=8)
    assert alone[("policy", "activations")] == 32 * per_token
    assert alone[("policy", "logits path (saved)")] == 1 * 16 * 512 * 4
    # the experience forwards run on the same micro-batches: larger with the larger budget
    experience = lambda **kw: plan_memory(_small(rollout_batch=16, **kw)).phases[1].total
    assert experience(micro_batch_tokens=256, grad_accum=4) > experience(grad_accum=4)
