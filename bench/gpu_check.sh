#!/usr/bin/env bash
# GPU check of the scale-out paths, for a machine with one or more NVIDIA GPUs (run from the repo
# root after `make test` or an equivalent install).
#
#   bash bench/gpu_check.sh [OUT_DIR]
#
# Each case runs `rlhfkit run --quick` (the bundled toy task, a few minutes at most on one GPU) and
# prints its PPO figures: first-mini-batch ratio deviation (0 in fp32; small in bf16), final KL and
# score, peak GPU memory per process, s/iteration. Cases: fp32 and bf16 on one process; DDP,
# FSDP2, ZeRO-2 and ZeRO-3 over every GPU, then FSDP2 stopped mid-PPO and resumed. A case that
# fails prints FAILED and the run goes on.
set -u
OUT=${1:-/tmp/rlhfkit-gpu-check}
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$GPUS" -ge 1 ] || { echo "no NVIDIA GPU found"; exit 1; }
PY=${PYTHON:-.venv/bin/python}
ACC="$PY -m accelerate.commands.launch"
rm -rf "$OUT"; mkdir -p "$OUT"

report() {  # the last PPO metrics line of a run directory
  "$PY" - "$1" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/ppo/metrics.jsonl") if '"timing/training"' in l]
last = rows[-1]
per_iter = sorted(r["timing/generation"] + r["timing/scoring"] + r["timing/training"] for r in rows[1:] or rows)
print(f"  iterations {len(rows)}  first_ratio_dev {max(r['policy/first_minibatch_ratio_dev'] for r in rows):.2e}  "
      f"kl {last['objective/kl']:.3f}  score {last['objective/scores']:.3f}  "
      f"peak_gpu_mb {last.get('memory/peak_gpu_allocated_mb', float('nan')):.0f}  s/iter {per_iter[len(per_iter)//2]:.3f}")
PYEOF
}

case_run() {  # name, launcher prefix (may be empty), extra --set arguments...
  local name=$1 launcher=$2; shift 2
  echo "== $name"
  if $launcher -m rlhfkit.cli run --quick -o "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1; then
    report "$OUT/$name"
  else
    echo "  FAILED (log: $OUT/$name.log)"; tail -5 "$OUT/$name.log"
  fi
}

case_run fp32 "$PY"
case_run bf16 "$PY" --set mixed_precision=bf16
case_run bf16-checkpointing "$PY" --set mixed_precision=bf16 --set ppo.gradient_checkpointing=true
case_run ddp "$ACC --multi_gpu --num_processes $GPUS" --set mixed_precision=bf16
case_run fsdp2 "$ACC --config_file configs/accelerate/fsdp.yaml --num_processes $GPUS" --set mixed_precision=bf16
echo "== fsdp2-resume (SIGTERM to every process after PPO iteration 3, then --resume)"
FSDP="$ACC --config_file configs/accelerate/fsdp.yaml --num_processes $GPUS"
setsid $FSDP -m rlhfkit.cli run --quick -o "$OUT/fsdp2-resume" --set mixed_precision=bf16 \
  >"$OUT/fsdp2-resume.log" 2>&1 &
LAUNCHER=$!
until [ "$(grep -c '"timing/training"' "$OUT/fsdp2-resume/ppo/metrics.jsonl" 2>/dev/null || echo 0)" -ge 3 ] \
      || ! kill -0 $LAUNCHER 2>/dev/null; do sleep 1; done
kill -TERM -- -$LAUNCHER 2>/dev/null; wait $LAUNCHER
if $FSDP -m rlhfkit.cli run --resume "$OUT/fsdp2-resume" >>"$OUT/fsdp2-resume.log" 2>&1; then
  grep -q "resuming from" "$OUT/fsdp2-resume.log" && echo "  resumed from a checkpoint" || echo "  (finished before the signal)"
  report "$OUT/fsdp2-resume"
else
  echo "  FAILED (log: $OUT/fsdp2-resume.log)"; tail -5 "$OUT/fsdp2-resume.log"
fi
case_run zero2 "$ACC --config_file configs/accelerate/zero2.yaml --num_processes $GPUS" --set mixed_precision=bf16
case_run zero3 "$ACC --config_file configs/accelerate/zero3.yaml --num_processes $GPUS" --set mixed_precision=bf16
