#!/usr/bin/env bash
# GPU smoke test of PROFILE=paper: a small synthetic cohort at the paper resolution
# (40x128x128), 3 epochs of 4D-ACFNet on one CUDA GPU with bf16 autocast, the last epoch
# resumed from last.pt. Must finish in under 8 minutes (hard limit below).
# Usage: benchmarks/gpu_smoke.sh [extra args of benchmarks/gpu_smoke.py, e.g. --n 32]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="${PYTHONPATH:-$PWD}"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "gpu_smoke: no CUDA GPU visible" >&2; exit 3; }
start=$(date +%s)
timeout 480 "$PY" benchmarks/gpu_smoke.py "$@"
"$PY" benchmarks/gpu_step.py --rounds 3 --steps 5
echo "gpu_smoke: done in $(( $(date +%s) - start )) s (limit 480 s for the training part)"
