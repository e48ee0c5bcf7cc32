#!/usr/bin/env bash
# How data/weights/ is made: every stage of the shapes pipeline, gpu recipes, each stage fitted
# to a wall-clock budget (the steps it ran are recorded in each weight's JSON and in
# train_report.json). Usage: scripts/train_shipped_weights.sh [OUT_DIR]   (default data/weights)
set -euo pipefail
OUT_DIR=${1:-data/weights}
PY=${PYTHON:-python3}
"$PY" -m dalle_mini_core.cli train all --mode gpu --out "$OUT_DIR" \
    --budget clip=80,prior=70,decoder=220,upsampler=80
