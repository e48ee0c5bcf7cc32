#!/usr/bin/env bash
# Wait (at most $1 seconds) for scripts/gpu_session.sh to finish, then copy what it has so far
# into $OUT (weights.tar split into 15 MB parts: a device call returns files of 16 MiB at most).
WORK=${WORK:-/tmp/gpu}
LIMIT=${1:-540}
t0=$(date +%s)
while [ ! -e "$WORK/DONE" ] && [ $(( $(date +%s) - t0 )) -lt "$LIMIT" ]; do sleep 5; done
cat "$WORK/progress" 2>/dev/null
for f in train eval sweep bench_b32 bench_b256; do
    [ -e "$WORK/$f.log" ] && { echo "--- $f.log"; tr '\r' '\n' <"$WORK/$f.log" | grep -v '^\s*$' | tail -n 14; }
done
if [ -n "${OUT:-}" ]; then  # a call returns 8 files at most: one tar of the small files, the weights in parts
    mkdir -p "$OUT"
    (cd "$WORK" && tar -cf "$OUT/results.tar" progress *.log *.json weights/*.json 2>/dev/null)
    [ -e "$WORK/weights.tar" ] && split -b 15M -d "$WORK/weights.tar" "$OUT/weights.tar.part"
    ls -la "$OUT"
fi
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
