"""Stage 2 — reward model: a scalar head trained on preference pairs with a Bradley–Terry loss.

Read top to bottom: 1. read and validate the pairs, 2. load an `AutoModelForSequenceClassification`
(`num_labels=1`) from the SFT checkpoint or any HF model, 3. tokenize prompt+response+EOS,
4. train on −log σ(r_chosen − r_rejected − margin) (+ optional label smoothing and centering;
a record with `votes`/`p_chosen` gives the soft target −[p log σ(Δ) + (1 − p) log σ(−Δ)]),
5. report loss / accuracy / mean margin on train and held-out pairs, 6. store the mean and std
of scores on a reference set in the checkpoint's config (`rlhfkit_score_mean/std`) so PPO can
normalise (Ziegler 2019 gain/bias; N+ detail 12), 7. save an HF checkpoint.

The score is read at the last non-pad token — the EOS of the response (N+ detail 11); the
model config's pad_token_id, distinct from EOS, is what the HF pooling uses to find it. An encoder
(BERT-style tokenizer with [CLS], rlhfkit.data.pairs) is trained on the framed (prompt, response) pair
instead, no EOS, and reads its score at [CLS].

The saved checkpoint scores the same outside rlhfkit (models/portable.py): its tokenizer frames text
as rlhfkit does, so `pipeline("text-classification", model=DIR, function_to_apply="none")` gives the
raw score, and `rlhfkit_score_mean/std` turn it into PPO's normalised reward (docs/data-handling.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhfkit.algos.losses import pairwise_loss, reward_centering_loss
from rlhfkit.config.stages import RewardConfig, RunConfig
from rlhfkit.data.pairs import is_encoder_tokenizer
from rlhfkit.data.records import PreferenceExample
from rlhfkit.data.tokenize import PreferenceCollator, TruncationStats, tokenize_preferences
from rlhfkit.models.load import check_model_source, load_reward_model, load_tokenizer, save_pretrained_atomic, score_head_name
from rlhfkit.models.lora import add_lora, merged, require_peft
from rlhfkit.models.portable import framed_like_rlhfkit
from rlhfkit.models.scoring import sequence_scores
from rlhfkit.stages.common import StageOutput, fit_max_length, read_train_and_held_out, require_examples
from rlhfkit.training.loop import example_length, make_accelerator, seed_everything, train_loop
from rlhfkit.training.metrics import MetricsWriter
from rlhfkit.training.resume import finished_stage, fingerprint, mark_finished
from rlhfkit.training.sharded import whole_weights

REFERENCE_SET_SIZE = 512


def read_preference_data(cfg: RewardConfig, seed: int) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Validated train and held-out pairs (raises DataError naming file, line and field)."""
    return read_train_and_held_out(cfg.data, "preferences", seed, "rm", "{prompt, chosen, rejected}")


def validate(cfg: RunConfig) -> None:
    """Everything that can be checked before training: the data file and the model path."""
    read_preference_data(cfg.rm, cfg.seed)
    check_model_source(cfg.rm.model, "rm.model")
    if cfg.rm.lora is not None:
        require_peft("rm.lora")


def pair_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor], encoder: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected), each (B,); `encoder`: the rows are framed pairs (rlhfkit.data.pairs)."""
    return tuple(  # type: ignore[return-value]
        sequence_scores(model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"],
                        batch.get(f"{side}_token_type_ids"), encoder=encoder)
        for side in ("chosen", "rejected"))


def _evaluate_pairs(model, batches, device, encoder: bool) -> dict[str, float]:
    chosen, rejected = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = pair_scores(model, batch, encoder)
        chosen.append(c)
        rejected.append(r)
    if not chosen:
        return {}
    c, r = torch.cat(chosen).float(), torch.cat(rejected).float()
    loss, stats = pairwise_loss(c, r)
    return {"loss": float(loss), "accuracy": stats["accuracy"], "margin": stats["margin"]}


def _reference_stats(model, batches, device, encoder: bool) -> tuple[float, float]:
    """Mean and std of scores over up to REFERENCE_SET_SIZE responses (both sides of each pair)."""
    scores: list[torch.Tensor] = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        scores.extend(pair_scores(model, batch, encoder))
        if sum(len(s) for s in scores) >= REFERENCE_SET_SIZE:
            break
    flat = torch.cat(scores).float()[:REFERENCE_SET_SIZE]
    return float(flat.mean()), float(flat.std()) if len(flat) > 1 else 1.0


def run(cfg: RunConfig, stage_dir: Path, *, resume: bool = False) -> StageOutput:
    """Train and save STAGE/model; with `resume`, continue from STAGE/checkpoints (or return the
    output of a stage that already finished)."""
    rm = cfg.rm
    if (done := finished_stage(stage_dir, resume)) is not None:
        return done
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, rm.optim.gradient_accumulation_steps, lora=rm.lora is not None)

    # 1. Pairs, validated before any model is loaded.
    train_records, eval_records = read_preference_data(rm, cfg.seed)

    # 2. Tokenizer and scalar-head model.
    tokenizer = load_tokenizer(rm.model, "rm.model", encoder_ok=True)
    encoder = is_encoder_tokenizer(tokenizer)
    model = load_reward_model(rm.model, tokenizer, "rm.model")
    if rm.lora is not None:  # adapters + the whole score head train; merged into the weights on save
        model = add_lora(model, rm.lora, where="rm.lora", head=score_head_name(model))

    # 3. Tokenize: prompt + response + EOS for both sides (an encoder: the framed pair, no EOS).
    max_length = fit_max_length(rm.data.max_length, model, "rm")
    stats = TruncationStats()
    train_data = tokenize_preferences(train_records, tokenizer, max_length, stats)
    eval_data = tokenize_preferences(eval_records, tokenizer, max_length, TruncationStats())
    require_examples(train_data, stats, rm.data.path, "rm", max_length, "pairs")
    collate = PreferenceCollator(tokenizer.pad_token_id)
    bs = rm.optim.batch_size
    # The held-out metrics are means over all pairs, whatever the order: batches of similar length pad less.
    by_length = sorted(eval_data, key=example_length)
    eval_batches = [collate(by_length[i : i + bs]) for i in range(0, len(by_length), bs)]
    if accelerator.is_main_process:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "data_stats.json").write_text(json.dumps(
            {"train_pairs": len(train_records), "eval_pairs": len(eval_records), "truncation": stats.as_dict(),
             "soft_label_pairs": sum(r.p_chosen is not None for r in train_records)}, indent=2))

    # 4. The Bradley–Terry objective.
    def loss_fn(model, batch):
        chosen, rejected = pair_scores(model, batch, encoder)
        margin = batch["margin"] if rm.use_margin else None
        # p_chosen: soft labels from people's votes (1.0 for a pair without them: a hard label)
        loss, pair_stats = pairwise_loss(chosen, rejected, margin=margin, label_smoothing=rm.label_smoothing,
                                         target=batch["p_chosen"])
        if rm.center_rewards_coefficient > 0:
            loss = loss + rm.center_rewards_coefficient * reward_centering_loss(chosen, rejected)
        return loss, {"accuracy": pair_stats["accuracy"], "margin": pair_stats["margin"]}

    def evaluate(model):
        return _evaluate_pairs(model, eval_batches, accelerator.device, encoder)

    # 5. Train (resumable, checkpoints in STAGE/checkpoints), with held-out loss/accuracy/margin before and along the way.
    with MetricsWriter(stage_dir / "metrics.jsonl", "rm", rm.logging.report_to,
                       enabled=accelerator.is_main_process) as writer:
        result = train_loop(
            accelerator=accelerator, model=model, train_data=train_data, collate=collate, loss_fn=loss_fn,
            evaluate=evaluate, optim=rm.optim, logging=rm.logging, writer=writer,
            seed=cfg.seed, description="Reward model", stage_dir=stage_dir, checkpoint=rm.checkpoint,
            fingerprint=fingerprint(cfg, rm, stage_dir), resume=resume,
        )

        # 6. Normalisation statistics on a reference set, stored with the checkpoint.
        model.eval()
        # In file order (held-out pairs, else training pairs), not by length: a length-sorted start would be the shortest responses.
        rows = (eval_data or train_data)[:REFERENCE_SET_SIZE]
        reference = [collate(rows[i : i + bs]) for i in range(0, len(rows), bs)]
        with torch.no_grad():
            mean, std = _reference_stats(model, reference, accelerator.device, encoder)
        writer.log(result.steps, {"reference/score_mean": mean, "reference/score_std": std})

    # 7. Save an HF checkpoint atomically, then mark the stage finished.
    accelerator.wait_for_everyone()
    unwrapped = merged(accelerator.unwrap_model(model), in_place=True)
    unwrapped.config.rlhfkit_score_mean = mean
    unwrapped.config.rlhfkit_score_std = std
    initial = {f"initial_{k.removeprefix('eval/')}": v for k, v in result.initial_eval.items()}
    output = StageOutput(checkpoint=stage_dir / "model", metrics={
        **initial, **result.last_train, **result.last_eval, "reference/score_mean": mean, "reference/score_std": std})
    weights = whole_weights(accelerator, unwrapped)  # gathered under FSDP (every process)
    if accelerator.is_main_process:
        save_pretrained_atomic(unwrapped, framed_like_rlhfkit(tokenizer), output.checkpoint, weights)
        mark_finished(stage_dir, output, drop_checkpoints=not rm.checkpoint.keep_when_finished)
    accelerator.wait_for_everyone()  # no process goes on before the model is on disk
    return output
