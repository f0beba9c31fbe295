"""Reward callables for the PPO smoke test (imported as `reward_fns:NAME`; the test puts this
directory on sys.path). Cheap, deterministic, and learnable by a tiny random-init model.

The tiny policy starts near-uniform over its 300 byte-level BPE tokens, most of which decode to
bytes that are not letters; about a fifth decode to lowercase letters or letter merges. Rewarding
lowercase letters therefore gives every batch a clear, dense signal (a rare single target token
does not: with untruncated sampling a 2-layer model barely moves on it in 15 iterations).
"""

from __future__ import annotations


def count_lowercase(prompts: list[str], responses: list[str]) -> list[float]:
    """+1 per ASCII lowercase letter in the response text."""
    return [float(sum("a" <= c <= "z" for c in r)) for r in responses]


def prefer_more_lowercase(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[bool | None]:
    """A refresh labeler: A is preferred when it has more lowercase letters; equal counts: no preference."""
    a_scores, b_scores = count_lowercase(prompts, responses_a), count_lowercase(prompts, responses_b)
    return [None if sa == sb else sa > sb for sa, sb in zip(a_scores, b_scores)]


def interrupted_twice(prompts: list[str], responses: list[str]) -> list[float]:
    """A slow reward: the user presses Ctrl-C, waits, and presses it again while it is still scoring."""
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    return [1.0] * len(prompts)


SEEN_PROMPTS: list[list[str]] = []


def record_prompts(prompts: list[str], responses: list[str]) -> list[float]:
    """count_lowercase, remembering each batch's prompts (for the samples_per_prompt test)."""
    SEEN_PROMPTS.append(list(prompts))
    return count_lowercase(prompts, responses)
