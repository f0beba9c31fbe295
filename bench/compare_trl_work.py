"""What both sides of bench/compare_trl.py read, and how a run is measured.

`build_work`     the shared tokenizer, models and prompts, built from configs (random init, seeded,
                 nothing downloaded) and saved once as safetensors under the work directory.
`measure_ceiling` the best fp32 matmul rate at the benchmark's thread count.
`run_measured`   one side in its own process, with the CPU time other processes used meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 4096  # the default preset's base-model vocabulary
POSITIONS = 256  # fits 16 prompt + 128 response tokens


def _tokenizer(work_dir: Path):
    from transformers import AutoTokenizer

    path = work_dir / "tokenizer"
    if not (path / "tokenizer.json").exists():
        from rlhfkit.tasks.fortunes.corpus import load_fortunes
        from rlhfkit.tasks.fortunes.tokenizer import train_tokenizer

        train_tokenizer(load_fortunes(), vocab_size=VOCAB).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def _models(work_dir: Path, tokenizer, layers: int, width: int) -> tuple[Path, Path]:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar would interleave with the report
    base = work_dir / f"{layers}L-d{width}"
    policy, rm = base / "policy", base / "reward_model"
    if (rm / "model.safetensors").exists():
        return policy, rm
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=layers, n_embd=width, n_head=max(1, width // 64),
                        n_positions=POSITIONS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, num_labels=1,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(policy, safe_serialization=True)
    torch.manual_seed(1)
    reward_model = GPT2ForSequenceClassification(config)
    _bag_of_tokens(reward_model)
    reward_model.save_pretrained(rm, safe_serialization=True)
    for path in (policy, rm):
        tokenizer.save_pretrained(path)
    return policy, rm


def _bag_of_tokens(rm) -> None:
    """Give the random reward model a signal PPO can learn in a few iterations (the shapes, hence
    the FLOPs, are unchanged): block 0's attention averages the whole sequence (q = k = 0, v and
    the output projection 20 x the identity) and the score head is a random unit direction, so the score
    is how far the mean normalised embedding of the tokens points along it. A plain random RM
    reads mostly the last token, which rlhfkit's scoring makes an appended EOS: a constant."""
    import torch

    d = rm.config.n_embd
    with torch.no_grad():
        block = rm.transformer.h[0].attn
        block.c_attn.weight.zero_()
        block.c_attn.weight[:, 2 * d:] = torch.eye(d)
        block.c_attn.bias.zero_()
        block.c_proj.weight.copy_(20 * torch.eye(d))  # the average outweighs the last token's own embedding
        block.c_proj.bias.zero_()
        direction = torch.randn(d)
        rm.score.weight.copy_((direction / direction.norm() * d ** 0.5).unsqueeze(0))


def _prompts(work_dir: Path, tokenizer, count: int, length: int) -> tuple[Path, list[list[int]]]:
    """`count` prompts that rlhfkit's own prompt loader turns into exactly `length` ids (no padding
    on either side), and those ids, which TRL is given as they are."""
    from rlhfkit.config import load_config
    from rlhfkit.stages.ppo_inputs import load_prompts
    from rlhfkit.tasks.fortunes.corpus import load_fortunes

    path = work_dir / f"prompts-{count}x{length}.jsonl"
    candidates = []
    for text in load_fortunes():
        ids = tokenizer(text)["input_ids"]
        if len(ids) > length:
            candidates.append(tokenizer.decode(ids[:length]))
    path.write_text("".join(json.dumps({"prompt": c}) + "\n" for c in candidates[: 4 * count]), encoding="utf-8")
    cfg = load_config(None, [f"ppo.data.path={path}", "ppo.generation.max_prompt_length=64"])
    texts, ids, *_ = load_prompts(cfg.ppo, tokenizer)
    keep = [(t, i) for t, i in zip(texts, ids) if len(i) == length][:count]
    if len(keep) < count:
        raise SystemExit(f"only {len(keep)} prompts of exactly {length} tokens")
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t, _ in keep), encoding="utf-8")
    _, reread, *_ = load_prompts(cfg.ppo, tokenizer)
    assert reread == [i for _, i in keep], "prompt ids changed on re-reading"
    return path, reread


def build_work(work_dir: Path, layers: int, width: int, response_length: int, batch: int, prompt_tokens: int) -> dict:
    tokenizer = _tokenizer(work_dir)
    policy, rm = _models(work_dir, tokenizer, layers, width)
    prompts, prompt_ids = _prompts(work_dir, tokenizer, batch, prompt_tokens)
    return {"policy": str(policy), "reward_model": str(rm), "prompts_jsonl": str(prompts), "prompt_ids": prompt_ids,
            "vocab_size": len(tokenizer), "response_length": response_length}


# ---------------------------------------------------------------------------------------------- measuring


def busy_seconds() -> float:
    """CPU-seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class OutsideLoad:
    """Busy cores of *other* work while this process runs: all cores' busy time minus this
    process's own CPU time, per wall second (a load average would count the benchmark's own threads).

        outside = OutsideLoad()   # starts measuring
        ...
        cores = outside.stop()
    """

    def __init__(self) -> None:
        self._busy, self._own, self._t0 = busy_seconds(), time.process_time(), time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        other = (busy_seconds() - self._busy) - (time.process_time() - self._own)
        return max(0.0, other) / wall


def run_measured(cmd: list[str], env: dict, log: Path) -> tuple[dict, float]:
    """Run `cmd`; returns (its `BENCH_RESULT {json}` line, busy cores of *other* work during it:
    all cores' busy time minus the process's own CPU time, per wall second)."""
    busy0, t0 = busy_seconds(), time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall, busy = time.perf_counter() - t0, busy_seconds() - busy0
    outside = max(0.0, busy - usage.ru_utime - usage.ru_stime) / wall
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("BENCH_RESULT ")]
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not lines:
        sys.stderr.write(text[-6000:])
        raise SystemExit(f"{' '.join(cmd[-2:])} failed (exit {code}); its output is above (also in {log})")
    return json.loads(lines[-1].removeprefix("BENCH_RESULT ")), outside


_CEILING = """
import json, time, torch
torch.set_num_threads({threads})
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
best = 0.0
for _ in range(12):
    t = time.perf_counter(); a @ b; best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t))
print("BENCH_RESULT " + json.dumps({{"flops": best, "threads": torch.get_num_threads()}}))
"""


def measure_ceiling(threads: int, log: Path) -> tuple[float, float]:
    """(best fp32 2048² matmul FLOP/s at `threads` threads, outside busy cores meanwhile)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result, outside = run_measured([sys.executable, "-c", _CEILING.format(threads=threads)], env, log)
    return result["flops"], outside
