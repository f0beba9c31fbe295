"""The rlhfkit side of bench/compare_trl.py: one run of rlhfkit's PPO stage on the shared work.

Run by compare_trl.py in rlhfkit's own venv, never by hand: `python compare_trl_rlhfkit.py WORK.json`.
It drives the stage through its public API (`load_config` + `stages.ppo.run`, what `rlhfkit ppo`
calls) with the settings TRL's PPOTrainer uses (see compare_trl.py's docstring for the mapping),
and prints one `BENCH_RESULT {json}` line: per-iteration phase times from rlhfkit's own
metrics.jsonl (`timing/generation`, `timing/scoring`, `timing/training`), the mean RM score per
iteration, and the process's peak RSS.

Benchmark-only change: EOS is suppressed for the whole response (min_new_tokens = max_new_tokens),
so every response is exactly `response_length` tokens, as in TRL with `stop_token=None`. That
makes the sampler differ from the learner's distribution on the EOS logit, which does not matter
for timing and hardly for the learning check; rlhfkit's normal runs never do it.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from pathlib import Path


def _force_full_length(n: int) -> None:
    from rlhfkit.rollout import generation
    from rlhfkit.stages import ppo

    class FullLengthBackend(generation.HFGenerationBackend):
        def __init__(self, model, tokenizer, cfg):
            super().__init__(model, tokenizer, cfg)
            self.config.min_new_tokens = n

    ppo.HFGenerationBackend = FullLengthBackend


def overrides(work: dict) -> list[str]:
    """rlhfkit's config for the shared work: TRL PPOTrainer's settings (compare_trl.py's docstring)."""
    n = work["iterations"]
    return [
        f"seed={work['seed']}", "device=cpu",  # mixed_precision stays "no" (fp32)
        f"ppo.policy.name_or_path={work['policy']}", f"ppo.value_model.name_or_path={work['reward_model']}",
        f"ppo.reward.model_paths=[{work['reward_model']}]", "ppo.reward.normalize=false",
        f"ppo.data.path={work['prompts_jsonl']}",
        f"ppo.batch_size={work['batch_size']}", f"ppo.mini_batch_size={work['batch_size']}",
        "ppo.gradient_accumulation_steps=1", f"ppo.ppo_epochs={work['ppo_epochs']}",
        f"ppo.num_iterations={n}", f"ppo.generation.max_new_tokens={work['response_length']}",
        f"ppo.generation.temperature={work['temperature']}", "ppo.generation.top_k=0", "ppo.generation.top_p=1.0",
        f"ppo.learning_rate={work['learning_rate']}", "ppo.lr_scheduler=constant", "ppo.adam_eps=1e-8",
        "ppo.max_grad_norm=null",  # TRL's PPO loop does not clip gradients
        "ppo.kl.adaptive=false", f"ppo.kl.kl_coef={work['kl_coef']}", "ppo.kl.estimator=k1",
        "ppo.whiten_rewards=false", "ppo.whiten_advantages=true", "ppo.gamma=1.0", "ppo.lam=0.95",
        "ppo.clip_range=0.2", "ppo.clip_range_value=0.2", "ppo.vf_coef=0.1",
        "ppo.logging.progress=false", f"ppo.sample_every={n + 1}", "ppo.diagnostics.enabled=false",
        f"ppo.checkpoint.save_every={n + 1}",
    ]


def main(work_file: str) -> None:
    work = json.loads(Path(work_file).read_text())
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(work["threads"])
    from rlhfkit.config import load_config
    from rlhfkit.stages import ppo as ppo_stage
    from rlhfkit.training.metrics import read_metrics

    _force_full_length(work["response_length"])
    with tempfile.TemporaryDirectory(prefix="rlhfkit-compare-") as tmp:
        cfg = load_config(None, overrides(work))
        ppo_stage.validate(cfg)
        ppo_stage.run(cfg, Path(tmp) / "ppo")
        lines = [m for m in read_metrics(Path(tmp) / "ppo" / "metrics.jsonl") if "timing/generation" in m]
    iterations = [{"generation": m["timing/generation"], "experience": m["timing/scoring"],
                   "update": m["timing/training"],
                   "total": m["timing/generation"] + m["timing/scoring"] + m["timing/training"]} for m in lines]
    result = {
        "framework": "rlhfkit",
        "threads": torch.get_num_threads(),
        "iterations": iterations,
        "scores": [m["objective/scores"] for m in lines],
        "response_length": [m["rollout/response_length"] for m in lines],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
