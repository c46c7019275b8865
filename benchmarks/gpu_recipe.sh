#!/usr/bin/env bash
# The recipe study on one GPU: every variant at the CPU study's budget (400 fine-tuning steps),
# then the main variants with a longer, faster schedule (2000 steps at lr 1e-3).
# Results land in $OUT (default ./gpu-out): recipe.jsonl and recipe.md.
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="${EXTRA_SITE:+$EXTRA_SITE:}$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
common=(--device cuda --jobs 6 --out-dir "$OUT/recipe" --table "$OUT/recipe.md" --seeds 0 1 --pretrain-steps 2000)
python3 benchmarks/recipe.py "${common[@]}" --steps 400 \
  --variants plain default lambda0 alpha0 no_norm centered no_stopgrad no_warmup m16_g4 m4_g2 backbone_head
python3 benchmarks/recipe.py "${common[@]}" --steps 2000 --lr 1e-3 \
  --variants plain default lambda0 alpha0 centered backbone_head
