"""The TRL side of bench/compare_trl.py: one run of TRL 1.12's PPOTrainer on the shared work.

Run by compare_trl.py in the TRL venv it creates (TRL is not an rlhfkit dependency), never by
hand: `python compare_trl_trl.py WORK.json`. Imports nothing from rlhfkit.

PPOTrainer.train() is one ~350-line loop with no timing hooks of its own (it logs only `eps`),
so its phases are timed by wrapping, without changing what it computes:
  generation  the module-level `batch_generation` it calls once per iteration (HF generate of
              the whole batch, which also returns the logits its old logprobs come from);
  experience  from the end of generation to the first update forward: the logprobs from those
              logits, reference / value / reward forwards, rewards, GAE, whitening;
  update      from the first `forward(model, ...)` call on the PolicyAndValueWrapper — the module
              function every update step calls — to the callback's `on_step_end` (the epochs
              loop, then its metric gathering, which is cheap on one CPU process);
  total       `on_step_end` to `on_step_end` (the first iteration: from `on_train_begin`).
Each `forward`/`batch_generation` is looked up by the trainer as a module global at call time,
so replacing the module attribute is enough. The RM score per iteration is TRL's own logged
`objective/scores`.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path


class PhaseClock:
    """Timestamps of the phase boundaries, per iteration."""

    def __init__(self):
        self.iterations: list[dict] = []
        self.scores: list[float] = []
        self._begin = self._gen_start = self._gen_end = self._update_start = None

    def begin(self):
        self._begin = time.perf_counter()

    def wrap_generation(self, fn):
        def timed(*args, **kwargs):
            self._gen_start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._gen_end = time.perf_counter()
            self._update_start = None
            return out
        return timed

    def wrap_forward(self, fn, wrapper_type):
        def timed(model, *args, **kwargs):
            if self._update_start is None and isinstance(model, wrapper_type):
                self._update_start = time.perf_counter()
            return fn(model, *args, **kwargs)
        return timed

    def step_end(self):
        now = time.perf_counter()
        self.iterations.append({"generation": self._gen_end - self._gen_start,
                                "experience": self._update_start - self._gen_end,
                                "update": now - self._update_start, "total": now - self._begin})
        self._begin = now


def main(work_file: str) -> None:
    work = json.loads(Path(work_file).read_text())
    import torch

    torch.set_num_threads(work["threads"])
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trainer_module

    transformers.logging.set_verbosity_error()
    clock = PhaseClock()
    trainer_module.batch_generation = clock.wrap_generation(trainer_module.batch_generation)
    trainer_module.forward = clock.wrap_forward(trainer_module.forward, trainer_module.PolicyAndValueWrapper)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                clock.scores.append(float(logs["objective/scores"]))

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

    tokenizer = AutoTokenizer.from_pretrained(work["policy"])
    tokenizer.padding_side = "left"
    batch, n = work["batch_size"], work["iterations"]
    with tempfile.TemporaryDirectory(prefix="trl-compare-") as tmp:
        args = PPOConfig(
            output_dir=tmp, seed=work["seed"], use_cpu=True, bf16=False, fp16=False, report_to="none",
            save_strategy="no", logging_steps=1, disable_tqdm=True, num_sample_generations=0,
            per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_mini_batches=1,
            local_rollout_forward_batch_size=batch, num_ppo_epochs=work["ppo_epochs"], total_episodes=batch * n,
            response_length=work["response_length"], stop_token=None, temperature=work["temperature"],
            learning_rate=work["learning_rate"], lr_scheduler_type="constant", kl_coef=work["kl_coef"],
            kl_estimator="k1", whiten_rewards=False, gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2,
            vf_coef=0.1, missing_eos_penalty=None,
        )
        dataset = Dataset.from_dict({"input_ids": work["prompt_ids"]})
        trainer = PPOTrainer(
            args=args, processing_class=tokenizer,
            model=AutoModelForCausalLM.from_pretrained(work["policy"]),
            ref_model=AutoModelForCausalLM.from_pretrained(work["policy"]),
            reward_model=AutoModelForSequenceClassification.from_pretrained(work["reward_model"]),
            value_model=AutoModelForSequenceClassification.from_pretrained(work["reward_model"]),
            train_dataset=dataset, eval_dataset=dataset, callbacks=[Clock()],
        )
        trainer.train()
    result = {
        "framework": "trl",
        "threads": torch.get_num_threads(),
        "iterations": clock.iterations,
        "scores": clock.scores,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
