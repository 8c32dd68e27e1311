#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, then the training benchmark of the paper's base
# shape in bf16 (tokens/s and MFU against the measured bf16 matrix-product peak), then, with two or
# more GPUs, the same real training run on 1 GPU and on 2 processes (tokens/s of each).
# Usage: bash bench/gpu.sh [PYTHON]   (default .venv/bin/python; make install first, with a CUDA torch)
set -euo pipefail
PY=${1:-.venv/bin/python}
cd "$(dirname "$0")/.."
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: bench/gpu.sh needs a GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PY
echo "== CUDA tests"
"$PY" -m pytest -m cuda -p no:cacheprovider tests/test_cuda.py
echo "== training step, base shape, bf16"
"$PY" bench/bench_train_step.py --device cuda --shape base --precision bf16,fp32 --steps 30 --warmup 5
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  echo "== 1 GPU vs 2 processes (base preset, bf16, demo corpus prepared with 8,000 BPE)"
  OUT=$(mktemp -d)
  "$PY" -m cli.main prepare --dataset demo --out "$OUT/data" --vocab-size 8000 >/dev/null
  FLAGS=(--data "$OUT/data" --preset base --device cuda --precision bf16 --max-steps 300 --eval-every 300 --eval-samples 50)
  "$PY" -m cli.main train "${FLAGS[@]}" --out "$OUT/one" | tail -12
  "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m cli.main train "${FLAGS[@]}" --out "$OUT/two" | tail -12
  rm -rf "$OUT"
else
  echo "== one GPU: no 1-vs-2-process comparison"
fi
