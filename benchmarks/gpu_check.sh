#!/usr/bin/env bash
# The one prepared GPU check: the CUDA/bf16 tests, then the forward, pipeline and training cost
# benchmarks on CUDA (WITH_TRAIN_COST=0 skips the training one). Run on a GPU machine from the
# repository root; results land in $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="${EXTRA_SITE:+$EXTRA_SITE:}$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/test_cuda.log"
python3 benchmarks/forward_cost.py --device cuda --dtype float32 --rounds 30 --out "$OUT/forward_cost_fp32.md"
python3 benchmarks/forward_cost.py --device cuda --dtype bfloat16 --rounds 30 --out "$OUT/forward_cost_bf16.md"
python3 benchmarks/pipeline_cost.py --device cuda --batch-sizes 1 8 32 --num-images 32 --rounds 10 --out "$OUT/pipeline_cost.md"
if [ "${WITH_TRAIN_COST:-1}" = 1 ]; then
  python3 benchmarks/train_cost.py --device cuda --dtype bfloat16 --steps 20 --out "$OUT/train_cost_bf16.md"
fi
