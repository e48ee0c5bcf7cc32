#!/usr/bin/env bash
# Run HERE (a machine that reaches the package registry), before a GPU call: downloads the Python
# packages the course needs that the GPU machine's image lacks (open_clip_torch and its ftfy and
# wcwidth; everything else -- torch, torchvision, timm, einops, safetensors, regex, tqdm,
# huggingface_hub, matplotlib, pillow -- is in the image) as wheels into .whl/ (git-ignored,
# about 2.4 MB), for Python 3.12 on x86-64. The GPU call names .whl in `carry`;
# scripts/gpu_emoji.sh installs them from there with no network.
# Usage: scripts/gpu_wheels.sh   (then: ls .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
ls -la .whl
