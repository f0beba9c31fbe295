"""Generation throughput: HF `generate` (dynamic cache, static cache, static cache + torch.compile),
rlhfkit's HF backend (the same `generate`, sampling by inverse CDF: rollout/sampling.py) and, where
vllm is importable, rlhfkit's vLLM backend — batch 64, exactly 128 new tokens.

    OMP_NUM_THREADS=1 .venv/bin/python bench/generation.py --threads 1
    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 VENV_WITH_VLLM/bin/python bench/generation.py --threads 1 --variants vllm

The model has the default preset's policy shape (GPT-2, 4 layers, d=128, 4 heads, vocab 4096),
random init, with 256 positions so a 16-token prompt + 128 tokens fit (the preset's own has 128).
EOS is suppressed (HF: min_new_tokens; vLLM: min_tokens) so every row is 128 tokens: tokens/s =
64 × 128 / seconds of the call, median over `--repeats` calls after one warm-up call (for compile
the warm-up is the compile, reported separately). Sampling is T = 0.7, top-k off, top-p 1, as PPO's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

BATCH, NEW_TOKENS, PROMPT = 64, 128, 16


def build_policy(path: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhfkit.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()  # ids only matter; the model's vocabulary is the preset's 4096
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=4096, n_layer=4, n_embd=128, n_head=4, n_positions=256,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
    return path


def time_calls(fn, repeats: int) -> tuple[float, float]:
    """(first call's seconds, median seconds of the next `repeats` calls)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def hf_variant(path: Path, variant: str, repeats: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompts = torch.randint(2, 4096, (BATCH, PROMPT), generator=torch.Generator().manual_seed(0))
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, eos_token_id=0, pad_token_id=1)
    if variant != "hf":
        config.cache_implementation = "static"
    if variant == "hf-static-compile":
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False, dynamic=False)

    @torch.no_grad()
    def call():
        out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), generation_config=config)
        assert out.shape == (BATCH, PROMPT + NEW_TOKENS)

    first, median = time_calls(call, repeats)
    return {"variant": variant, "first_call_s": first, "median_s": median}


def time_backend(backend, variant: str, repeats: int) -> dict:
    """A rlhfkit GenerationBackend on the benchmark's prompts (every row must get NEW_TOKENS tokens)."""
    import torch

    prompts = torch.randint(2, 4096, (BATCH, PROMPT), generator=torch.Generator().manual_seed(0))

    def call():
        out = backend.generate(prompts, torch.ones_like(prompts))
        assert out.shape == (BATCH, NEW_TOKENS), out.shape

    first, median = time_calls(call, repeats)
    return {"variant": variant, "first_call_s": first, "median_s": median}


def rlhfkit_variant(path: Path, repeats: int) -> dict:
    """rlhfkit's HFGenerationBackend, what PPO and evaluation call (EOS suppressed as above)."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from rlhfkit.config.stages import GenerationSection
    from rlhfkit.rollout.generation import HFGenerationBackend

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = SimpleNamespace(eos_token_id=0, pad_token_id=1)  # all the backend reads of a tokenizer
    backend = HFGenerationBackend(model, ids, GenerationSection(temperature=0.7, max_new_tokens=NEW_TOKENS))
    backend.config.min_new_tokens = NEW_TOKENS
    return time_backend(backend, "rlhfkit", repeats)


def vllm_variant(path: Path, repeats: int) -> dict:
    from rlhfkit.config.stages import GenerationSection
    from rlhfkit.rollout import vllm_backend

    cfg = GenerationSection(temperature=0.7, max_new_tokens=NEW_TOKENS)
    backend = vllm_backend.VLLMGenerationBackend.start(path, cfg, 0, 1, "float32", 256, 0)
    original = vllm_backend.sampling_params

    def full_length(cfg, eos_id, seed):  # benchmark only: EOS suppressed, as min_new_tokens does for HF
        params = original(cfg, eos_id, seed)
        params.min_tokens = NEW_TOKENS
        return params

    vllm_backend.sampling_params = full_length
    return time_backend(backend, "vllm", repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="hf,rlhfkit,hf-static,hf-static-compile",
                   help="comma list of hf, rlhfkit, hf-static, hf-static-compile, vllm (default: all but vllm)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="rlhfkit-genbench-") as tmp:
        path = build_policy(Path(tmp) / "policy")
        for variant in args.variants.split(","):
            if variant == "vllm":
                r = vllm_variant(path, args.repeats)
            elif variant == "rlhfkit":
                r = rlhfkit_variant(path, args.repeats)
            else:
                r = hf_variant(path, variant, args.repeats)
            r["tokens_per_s"] = BATCH * NEW_TOKENS / r["median_s"]
            results.append(r)
            print(f"{variant:<18} {r['tokens_per_s']:8.0f} tokens/s  (median {r['median_s']:.2f} s per call of "
                  f"{BATCH}x{NEW_TOKENS}; first call {r['first_call_s']:.2f} s)", flush=True)
    base = next((r for r in results if r["variant"] == "hf"), None)
    if base:
        for r in results:
            r["vs_hf"] = r["tokens_per_s"] / base["tokens_per_s"]
    print(json.dumps({"threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
