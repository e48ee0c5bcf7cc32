#!/usr/bin/env bash
# One GPU session's work, run in the background on a remote GPU machine (it outlives a single
# 10-minute device call; poll it with scripts/gpu_poll.sh). Everything lands in $WORK:
#   1. the shipped shapes pipeline: scripts/train_shipped_weights.sh      -> $WORK/weights
#   2. dalle-mini eval shapes on those weights (4 images per prompt)      -> $WORK/eval.json
#   3. caption accuracy across generation settings                       -> $WORK/sweep.json
#   4. the U-Net benchmark in bf16, ref32 and ref64, batch 32 and 256     -> $WORK/bench_*.json
# Usage (on the GPU machine, from the repository root): setsid scripts/gpu_session.sh &
set -uo pipefail
WORK=${WORK:-/tmp/gpu}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
PY=${PYTHON:-python3}
say() { echo "=== $* ($(date +%T))" | tee -a "$WORK/progress"; }

say train
PYTHON=$PY bash scripts/train_shipped_weights.sh "$WORK/weights" >"$WORK/train.log" 2>&1
say "train rc=$?"
tar -C "$WORK" -cf "$WORK/weights.tar" weights && say "weights.tar written"

say eval
timeout 300 $PY -m dalle_mini_core.cli eval shapes --weights "$WORK/weights" --json "$WORK/eval.json" \
    --per-prompt 4 >"$WORK/eval.log" 2>&1
say "eval rc=$?"

say sweep
timeout 300 $PY scripts/sweep_generation.py --weights "$WORK/weights" --json "$WORK/sweep.json" \
    --per-prompt 4 >"$WORK/sweep.log" 2>&1
say "sweep rc=$?"

say bench32
timeout 200 $PY -m dalle_mini_core.cli bench unet --configs ref32 ref64 --repeats 5 \
    --json "$WORK/bench_b32.json" >"$WORK/bench_b32.log" 2>&1
say "bench32 rc=$?"
say bench256
timeout 200 $PY benchmarks/bench_unet.py --configs ref32 ref64 --repeats 5 --train-batch 256 --sample-batch 256 \
    --json "$WORK/bench_b256.json" >"$WORK/bench_b256.log" 2>&1
say "bench256 rc=$?"
touch "$WORK/DONE"
