"""Before/after of the small PPO speed-ups, each interleaved A/B in one process (medians).

1. adamw       torch.optim.AdamW over the actor-critic's parameters with gradients: the default
               single-tensor loop (foreach=False), foreach=True, fused=True — one optimiser step.
2. forward     the experience's policy forward as it was (full logits, HF's default KV cache in
               eval mode) against `response_logprobs` now (use_cache=False, logits_to_keep = Tr + 1):
               seconds and peak live tensor bytes (memory/measure.py::LiveBytes).
3. logsoftmax  logprobs + entropy of the (B, Tr, V) response logits under no_grad in one go
               (algos/logprobs.py) against the same in chunks of 256 positions.
4. entropy     one update micro-batch (the actor-critic's forward, the PPO losses, backward) with
               the entropy in the graph (as before; still so with ppo.entropy_coef > 0) against
               the entropy outside it (ppo.entropy_coef 0, the default): seconds and peak live bytes.

Model: the default preset's shape (GPT-2, 4 layers, d=128, vocabulary 4096) unless --layers/--width
say otherwise; 16 rows of 16 prompt + 24 response tokens (the update's mini-batch). The load average
is printed; figures taken while other jobs share the CPU are marked contended.

    OMP_NUM_THREADS=1 .venv/bin/python bench/cheap_wins.py --repeats 7
    OMP_NUM_THREADS=1 .venv/bin/python bench/cheap_wins.py --layers 6 --width 512 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

ROWS, TQ, TR = 16, 16, 24


def _median_times(variants: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def _report(title: str, medians: dict[str, float], extra: dict[str, str] | None = None) -> None:
    base = next(iter(medians.values()))
    print(title)
    for name, seconds in medians.items():
        print(f"  {name:<34}{seconds * 1e3:>10.2f} ms  {base / seconds:>6.2f}×  {(extra or {}).get(name, '')}")


def bench_adamw(models, repeats: int) -> None:
    params = [p for p in models.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {
        "foreach=False (single tensor)": torch.optim.AdamW(params, lr=1e-5, foreach=False),
        "foreach=True": torch.optim.AdamW(params, lr=1e-5, foreach=True),
        "fused=True": torch.optim.AdamW(params, lr=1e-5, fused=True),
    }
    for opt in optimizers.values():
        opt.step()  # creates the moments: the timed steps are steady-state ones
    _report(f"1. AdamW step over {sum(p.numel() for p in params) / 1e6:.2f}M parameters",
            _median_times({name: opt.step for name, opt in optimizers.items()}, repeats))


def bench_forward(policy, ids, mask, repeats: int) -> None:
    from rlhfkit.algos.logprobs import logprobs_from_logits
    from rlhfkit.memory.measure import LiveBytes
    from rlhfkit.models.actor_critic import response_logprobs
    from rlhfkit.models.scoring import position_ids_from_mask

    @torch.no_grad()
    def before():  # the seed's experience forward: every position's logits, a KV cache built and dropped
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        return logprobs_from_logits(logits[:, TQ - 1 : -1], ids[:, TQ:], 0.7)

    @torch.no_grad()
    def after():
        return response_logprobs(policy, ids, mask, TQ, 0.7)

    torch.testing.assert_close(before(), after(), atol=1e-5, rtol=0)  # the same logprobs
    peaks = {}
    for name, fn in (("before: full logits + KV cache", before), ("after: use_cache=False, logits_to_keep", after)):
        with LiveBytes() as live:
            fn()
        peaks[name] = f"peak {live.peak / 2**20:.1f} MiB live"
    _report("2. experience policy forward", _median_times({name: fn for name, fn in
            zip(peaks, (before, after))}, repeats), peaks)


def bench_logsoftmax(vocab: int, repeats: int) -> None:
    from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits
    from rlhfkit.memory.measure import LiveBytes

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(ROWS, TR, vocab, generator=g) * 3
    labels = torch.randint(0, vocab, (ROWS, TR), generator=g)

    @torch.no_grad()
    def whole():
        return logprobs_from_logits(logits, labels, 0.7), entropy_from_logits(logits, 0.7)

    @torch.no_grad()
    def chunked(size: int = 256):
        flat, flat_labels = logits.reshape(-1, vocab), labels.reshape(-1)
        parts = [(logprobs_from_logits(flat[i : i + size], flat_labels[i : i + size], 0.7),
                  entropy_from_logits(flat[i : i + size], 0.7)) for i in range(0, len(flat), size)]
        return (torch.cat([p[0] for p in parts]).view(ROWS, TR), torch.cat([p[1] for p in parts]).view(ROWS, TR))

    for a, b in zip(whole(), chunked()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    peaks = {}
    for name, fn in (("whole (B, Tr, V)", whole), ("chunks of 256 positions", chunked)):
        with LiveBytes() as live:
            fn()
        peaks[name] = f"peak {live.peak / 2**20:.1f} MiB live (logits {logits.numel() * 4 / 2**20:.1f} MiB)"
    _report(f"3. logprobs + entropy of {ROWS}×{TR}×{vocab} logits, no_grad",
            _median_times({"whole (B, Tr, V)": whole, "chunks of 256 positions": chunked}, repeats), peaks)


def bench_entropy_graph(actor_critic, ids, mask, repeats: int) -> None:
    from rlhfkit.algos.losses import ppo_policy_loss, value_loss
    from rlhfkit.memory.measure import LiveBytes

    response_mask = torch.ones(ROWS, TR)
    old_logprobs, advantages = torch.full((ROWS, TR), -3.0), torch.randn(ROWS, TR, generator=torch.Generator().manual_seed(1))
    actor_critic.train()

    def step(entropy_grad: bool):
        def run():
            out = actor_critic(ids, mask, TQ, 0.7, entropy_grad=entropy_grad)
            pg_loss, _ = ppo_policy_loss(out.logprobs, old_logprobs, advantages, response_mask, 0.2, response_mask.sum())
            vf_loss, _ = value_loss(out.values, out.values.detach(), advantages, response_mask, 0.2, response_mask.sum())
            entropy = (out.entropy * response_mask).sum() / response_mask.sum()
            (pg_loss - 0.0 * entropy + 0.1 * vf_loss).backward()
            actor_critic.zero_grad(set_to_none=True)
        return run

    variants = {"before: entropy in the graph": step(True), "after: entropy outside it": step(False)}
    peaks = {}
    for name, fn in variants.items():
        with LiveBytes() as live:
            fn()
        peaks[name] = f"peak {live.peak / 2**20:.1f} MiB live"
    _report(f"4. update micro-batch ({ROWS} rows), forward + backward, entropy_coef 0",
            _median_times(variants, repeats), peaks)
    actor_critic.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from padding_free import build_models

    load_before = os.getloadavg()[0]
    actor_critic, _ = build_models(args.layers, args.width, args.vocab)
    print(f"GPT-2 {args.layers}L d={args.width} V={args.vocab}; torch threads {torch.get_num_threads()}; "
          f"{args.repeats} repeats")
    bench_adamw(actor_critic, args.repeats)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, args.vocab, (ROWS, TQ + TR), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, : TQ // 2] = 0  # some prompts shorter (left padding)
    bench_forward(actor_critic.policy.eval(), ids, mask, args.repeats)
    bench_logsoftmax(args.vocab, args.repeats)
    bench_entropy_graph(actor_critic, ids, mask, args.repeats)
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.1f} → {load_after:.1f} on {os.cpu_count()} CPUs"
          + (": CONTENDED — other jobs shared the CPU, treat the times as rough" if max(load_before, load_after) > 1.5 else ""))


if __name__ == "__main__":
    main()
