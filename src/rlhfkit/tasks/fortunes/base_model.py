"""The task's base model: a small (~1.3M-parameter) GPT-2 pretrained on fortune cookies, cached.

RLHF starts from a pretrained language model. Downloading one is not allowed at run time and
even the smallest hub models are too slow to fine-tune three times on a 2-core CPU, so the
default task pretrains its own, once, and caches it under `cache_dir/base-<hash>`:

* the hash covers the spec, the exact pretraining text and a format version, so any change
  makes a new model rather than silently reusing a stale one;
* the checkpoint is written to a temporary directory and renamed into place in one step, so
  an interrupted build never looks like a finished one (a leftover temp dir is just ignored).

The checkpoint is an ordinary Hugging Face directory (safetensors + config + tokenizer), so
every later stage loads it with `AutoModelForCausalLM.from_pretrained` like any hub model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .corpus import corpus_fingerprint, load_fortunes, split_corpus
from .tokenizer import train_tokenizer

#: Bump when the training recipe changes in a way that should invalidate cached models.
_FORMAT_VERSION = 1
INFO_FILE = "pretrain_info.json"

ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class BaseModelSpec:
    """Architecture and pretraining budget of the base model (all of it goes into the cache key)."""

    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    train_steps: int = 800
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    seed: int = 0
    warmup_steps: int = 30
    weight_decay: float = 0.1
    split_seed: int = 0  # must match the split the rest of the task uses (held-out prompts)
    max_chars: int | None = 400  # corpus filter, see load_fortunes

    def __post_init__(self) -> None:
        if self.seq_len > self.n_positions:
            raise ValueError("seq_len must be <= n_positions")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")

    @classmethod
    def default(cls) -> BaseModelSpec:
        """~1.3M parameters, 800 steps of 16 x 128 tokens (~5 epochs), about 3 minutes on 2 idle
        CPU cores (0.22 s/step); held-out loss ~5.05 nats/token.

        Measured: at a fixed CPU budget a narrow model taking more steps beats a wider one
        (4 x 128 wide, 700 steps: held-out loss 5.14; 4 x 192, 450 steps: 5.31; 4 x 256,
        300 steps: 5.48), and a 4096-token vocabulary beats 2048 in bits per character."""
        return cls()

    @classmethod
    def quick(cls) -> BaseModelSpec:
        """~0.7M parameters, well under 40 s; rough text, enough to exercise the pipeline.

        Same context length as the default (positions beyond the trained length would be
        untrained noise for the later stages), fewer rows per batch instead."""
        return cls(vocab_size=2048, n_layer=2, n_embd=128, n_head=4, train_steps=250, batch_size=8, lr=3e-3, warmup_steps=10)

    def cache_key(self, fingerprint: str) -> str:
        payload = json.dumps({"spec": asdict(self), "corpus": fingerprint, "v": _FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """`$RLHFKIT_CACHE` if set, else `~/.cache/rlhfkit`."""
    env = os.environ.get("RLHFKIT_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "rlhfkit"
    if path.exists() and not path.is_dir():
        from rlhfkit.config.load import ConfigError

        raise ConfigError(f"RLHFKIT_CACHE={path} is a file, not a directory: point it at a directory for the cached base model")
    return path


def pretrain_texts(spec: BaseModelSpec) -> tuple[list[str], list[str]]:
    """(pretraining entries, held-out entries) for `spec`: the corpus "pretrain" split and the
    "eval_prompts" split, which no training stage ever sees."""
    splits = split_corpus(load_fortunes(spec.max_chars), seed=spec.split_seed)
    return splits["pretrain"], splits["eval_prompts"]


def _token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All texts tokenized, each followed by EOS, as one flat id tensor.

    The EOS between entries teaches the model where a fortune ends: PPO rollouts rely on the
    policy emitting EOS to stop.
    """
    ids: list[int] = []
    # The backend tokenizer directly: entries may exceed model_max_length (they are cut into
    # blocks afterwards), and the wrapper would warn about every such entry.
    for enc in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _blocks(stream: torch.Tensor, seq_len: int, offset: int = 0) -> torch.Tensor:
    usable = (len(stream) - offset) // seq_len * seq_len
    return stream[offset : offset + usable].view(-1, seq_len)


def _lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warmup, then cosine decay to `floor` x the peak rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _mean_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        batch = blocks[i : i + batch_size]
        total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
        count += len(batch)
    return total / max(1, count)


def _make_model(spec: BaseModelSpec, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        # Dropout off everywhere: PPO compares log-probs of the same tokens under the policy
        # at rollout and at update time; dropout noise would make that ratio meaningless.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    return model


@contextlib.contextmanager
def _quiet_progress_bars():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _train(spec: BaseModelSpec, texts: Sequence[str], heldout: Sequence[str], out_dir: Path, progress: ProgressFn | None) -> dict:
    """Train tokenizer + model and save both into `out_dir`; returns the run summary."""
    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    tokenizer = train_tokenizer(texts, vocab_size=spec.vocab_size, model_max_length=spec.n_positions)
    stream = _token_stream(tokenizer, texts)
    heldout_blocks = _blocks(_token_stream(tokenizer, heldout), spec.seq_len) if heldout else None
    model = _make_model(spec, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())

    # Weight decay on matrices only, not on biases and LayerNorm gains (standard practice).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )

    model.train()
    order: list[int] = []
    blocks = _blocks(stream, spec.seq_len)
    epochs, ema, curve = 0, None, {}
    every = max(1, spec.train_steps // 10)
    for step in range(spec.train_steps):
        if len(order) < spec.batch_size:
            # New epoch: shift the block boundaries by a random offset so repeated passes see
            # different windows of the same text (cheap augmentation for a small corpus).
            blocks = _blocks(stream, spec.seq_len, offset=rng.randrange(spec.seq_len) if epochs else 0)
            order = list(range(len(blocks)))
            rng.shuffle(order)
            epochs += 1
        idx, order = order[: spec.batch_size], order[spec.batch_size :]
        batch = blocks[idx]
        for group in optim.param_groups:
            group["lr"] = spec.lr * _lr_factor(step, spec.train_steps, spec.warmup_steps)
        loss = model(input_ids=batch, labels=batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        value = loss.item()
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if (step + 1) % every == 0:
            curve[step + 1] = round(ema, 3)
        if progress is not None:
            progress(step + 1, spec.train_steps, value)

    train_seconds = time.perf_counter() - start
    heldout_loss = _mean_loss(model, heldout_blocks, 32) if heldout_blocks is not None and len(heldout_blocks) else None
    with _quiet_progress_bars():  # the caller draws its own progress; no stray tqdm bars
        model.save_pretrained(out_dir)  # safetensors by default
        tokenizer.save_pretrained(out_dir)
    info = {
        "spec": asdict(spec),
        "n_params": n_params,
        "n_pretrain_entries": len(texts),
        "n_pretrain_tokens": int(len(stream)),
        "epochs": round(spec.train_steps * spec.batch_size * spec.seq_len / max(1, len(stream)), 2),
        "final_train_loss_ema": round(float(ema), 4) if ema is not None else None,
        "train_loss_curve": curve,  # step -> smoothed training loss, ten points
        "heldout_loss": round(heldout_loss, 4) if heldout_loss is not None else None,
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def build_base_model(
    spec: BaseModelSpec | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    texts: Sequence[str] | None = None,
    heldout_texts: Sequence[str] | None = None,
) -> Path:
    """Directory of the pretrained base model for `spec`, building it only if not cached.

    `texts`/`heldout_texts` default to the fortune corpus splits (see `pretrain_texts`).
    `progress(step, total, loss)` is called after every optimiser step of a fresh build.
    """
    spec = spec or BaseModelSpec.default()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if texts is None:
        texts, default_heldout = pretrain_texts(spec)
        heldout_texts = default_heldout if heldout_texts is None else heldout_texts
    texts = list(texts)
    heldout_texts = list(heldout_texts or [])
    key = spec.cache_key(corpus_fingerprint(texts + ["\x01heldout"] + heldout_texts))
    final = cache_dir / f"base-{key}"
    if (final / INFO_FILE).is_file():
        return final  # the info file is written last, inside the temp dir: its presence means complete

    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-base-{key}-", dir=cache_dir))
    try:
        # Seeding must not leak into the caller's random stream (e.g. a later SFT stage).
        with torch.random.fork_rng(devices=[]):
            _train(spec, texts, heldout_texts, tmp, progress)
        try:
            os.rename(tmp, final)  # atomic on one filesystem
        except OSError:
            if not (final / INFO_FILE).is_file():
                raise
            # Another process finished the same build first; its result is equivalent.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_temp_dirs(cache_dir: Path, max_age_s: float = 6 * 3600) -> None:
    """Delete temp dirs left by killed builds. Only old ones: a young one may belong to a build
    running right now in another process."""
    now = time.time()
    for d in cache_dir.glob(".tmp-base-*"):
        with contextlib.suppress(OSError):
            if now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)


def load_pretrain_info(model_dir: Path) -> dict:
    """The summary a build wrote next to the checkpoint (params, losses, wall time)."""
    return json.loads((Path(model_dir) / INFO_FILE).read_text())
