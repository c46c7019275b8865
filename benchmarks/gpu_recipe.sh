#!/usr/bin/env bash
# The recipe study on one GPU, with gradient clipping (without it, ViT pretraining from scratch
# stalled at chance on the H100 for both seeds). Results land in $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="${EXTRA_SITE:+$EXTRA_SITE:}$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 benchmarks/recipe_v1.py --device cuda --jobs 8 --out-dir "$OUT/recipe" --table "$OUT/recipe.md" \
  --seeds 0 1 --pretrain-steps 2000 --max-grad-norm 1.0 --steps 400 \
  --variants plain default lambda0 alpha0 centered no_stopgrad backbone_head "$@"
