#!/usr/bin/env bash
# How data/weights/ is made: every stage of the shapes pipeline, gpu recipes, each stage fitted
# to a wall-clock budget (a short calibration measures seconds per step; the cosine schedule is
# laid out over the steps that fit). The steps each stage ran are recorded in its weights' JSON
# and in train_report.json. Usage: scripts/train_shipped_weights.sh [OUT_DIR]  (default data/weights)
set -euo pipefail
OUT_DIR=${1:-data/weights}
PY=${PYTHON:-python3}
"$PY" -m dalle_mini_core.cli train all --dataset shapes --mode gpu --out "$OUT_DIR" \
    --budget clip=60,prior=150,decoder=420,upsampler=120 \
    --steps clip=2400,prior=20000,decoder=8000,upsampler=6000
