"""Stage 1 — supervised fine-tuning (SFT) with a completion-only loss.

Read top to bottom: 1. read and validate the data, 2. load tokenizer and model, 3. tokenize
(prompt tokens get label −100, so only the response and its EOS are learned), 4. train with
the shared loop, 5. evaluate loss and perplexity on the held-out split, 6. save an HF
checkpoint (safetensors + tokenizer) that `AutoModelForCausalLM.from_pretrained` loads.

Departure from the N+ reference code: it trains on query + response tokens; we default to
the completion-only loss the issue asks for, which is also TRL's default for prompt/completion data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rlhfkit.algos.losses import sft_loss
from rlhfkit.config.stages import RunConfig, SFTConfig
from rlhfkit.data.records import InstructionExample
from rlhfkit.data.tokenize import SFTCollator, TruncationStats, pack_sft, tokenize_sft
from rlhfkit.stages.common import StageOutput, fit_max_length, read_train_and_held_out, require_examples
from rlhfkit.models.load import check_model_source, load_causal_lm, load_tokenizer, save_pretrained_atomic
from rlhfkit.models.lora import add_lora, merged, require_peft
from rlhfkit.training.loop import make_accelerator, seed_everything, train_loop
from rlhfkit.training.metrics import MetricsWriter
from rlhfkit.training.resume import finished_stage, fingerprint, mark_finished
from rlhfkit.training.sharded import whole_weights


def read_sft_data(cfg: SFTConfig, seed: int) -> tuple[list[InstructionExample], list[InstructionExample]]:
    """Validated train and held-out records (raises DataError naming file, line and field)."""
    return read_train_and_held_out(cfg.data, "instructions", seed, "sft", "{prompt, response} or {messages}")


def validate(cfg: RunConfig) -> None:
    """Everything that can be checked before training: the data file and the model path."""
    read_sft_data(cfg.sft, cfg.seed)
    check_model_source(cfg.sft.model, "sft.model")
    if cfg.sft.lora is not None:
        require_peft("sft.lora")


def _mean_eval_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    total, tokens = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(sft_loss(logits, batch["labels"])) * n
        tokens += n
    return total / max(tokens, 1)


def run(cfg: RunConfig, stage_dir: Path, *, resume: bool = False) -> StageOutput:
    """Train and save STAGE/model; with `resume`, continue from STAGE/checkpoints (or return the
    output of a stage that already finished)."""
    sft = cfg.sft
    if (done := finished_stage(stage_dir, resume)) is not None:
        return done
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, sft.optim.gradient_accumulation_steps, lora=sft.lora is not None)

    # 1. Data, validated before any model is loaded.
    train_records, eval_records = read_sft_data(sft, cfg.seed)

    # 2. Tokenizer (with a pad token distinct from EOS) and model.
    tokenizer = load_tokenizer(sft.model, "sft.model")
    model = load_causal_lm(sft.model, tokenizer, "sft.model")
    if sft.lora is not None:  # only the adapters train; merged into the weights on save
        model = add_lora(model, sft.lora, where="sft.lora")

    # 3. Tokenize: completion-only labels, truncation counted.
    max_length = fit_max_length(sft.data.max_length, model, "sft")
    stats = TruncationStats()
    train_data = tokenize_sft(train_records, tokenizer, max_length, stats)
    eval_data = tokenize_sft(eval_records, tokenizer, max_length, TruncationStats())
    require_examples(train_data, stats, sft.data.path, "sft", max_length, "examples")
    if sft.packing:
        train_data = pack_sft(train_data, max_length)
    collate = SFTCollator(tokenizer.pad_token_id)
    eval_batches = [collate(eval_data[i : i + sft.optim.batch_size]) for i in range(0, len(eval_data), sft.optim.batch_size)]
    if accelerator.is_main_process:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "data_stats.json").write_text(json.dumps(
            {"train_records": len(train_records), "eval_records": len(eval_records), "truncation": stats.as_dict()}, indent=2))

    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sft_loss(logits, batch["labels"]), {}

    def evaluate(model):
        if not eval_batches:
            return {}
        loss = _mean_eval_loss(model, eval_batches, accelerator.device)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    # 4. Train (resumable, checkpoints in STAGE/checkpoints); 5. evaluate before, along the way and at the end.
    with MetricsWriter(stage_dir / "metrics.jsonl", "sft", sft.logging.report_to,
                       enabled=accelerator.is_main_process) as writer:
        result = train_loop(
            accelerator=accelerator, model=model, train_data=train_data, collate=collate, loss_fn=loss_fn,
            evaluate=evaluate, optim=sft.optim, logging=sft.logging, writer=writer,
            seed=cfg.seed, description="SFT", stage_dir=stage_dir, checkpoint=sft.checkpoint,
            fingerprint=fingerprint(cfg, sft, stage_dir), resume=resume,
        )

    # 6. Save an HF checkpoint atomically, then mark the stage finished.
    accelerator.wait_for_everyone()
    initial = {f"initial_{k.removeprefix('eval/')}": v for k, v in result.initial_eval.items()}
    output = StageOutput(checkpoint=stage_dir / "model", metrics={**initial, **result.last_train, **result.last_eval})
    weights = whole_weights(accelerator, accelerator.unwrap_model(model))  # gathered under FSDP (every process)
    if accelerator.is_main_process:
        save_pretrained_atomic(merged(accelerator.unwrap_model(model), in_place=True), tokenizer, output.checkpoint, weights)
        mark_finished(stage_dir, output, drop_checkpoints=not sft.checkpoint.keep_when_finished)
    accelerator.wait_for_everyone()  # no process goes on before the model is on disk
    return output
