#!/usr/bin/env bash
# GPU check of PROFILE=paper, one command, under 8 minutes in all (hard limit below):
#   1. the data step at the paper resolution: a small synthetic cohort (24 patients, 256x256
#      slices) preprocessed to 40x128x128;
#   2. one 4D-ACFNet fit with the paper profile's engine (AdamW, batch 1, AMP: bf16 autocast
#      where supported, else fp16 with a scaler) for 3 epochs, the last one resumed from last.pt;
#      prints seconds per epoch, training samples/s, the autocast type and the peak GPU memory;
#   3. the step benchmark (benchmarks/gpu_step.py): samples/s and peak memory of 4D-ACFNet, the
#      3D CNN and the 3D ResNet-18, and the ratio of 4D-ACFNet's step time to the 3D CNN's.
# Usage: benchmarks/gpu_smoke.sh [--cpu] [extra args of benchmarks/gpu_smoke.py, e.g. --n 32]
#   --cpu   the same steps at the smoke profile's size on the CPU (a check of the script, ~1 min)
# PY=/path/to/python picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
export PYTHONPATH="${PYTHONPATH:-$PWD}"
LIMIT_S=480
start=$(date +%s)
remaining() { echo $(( LIMIT_S - ($(date +%s) - start) )); }

if [ "${1:-}" = "--cpu" ]; then
  shift
  fit_args=(--profile smoke --n 8 --epochs 2)
  step_args=(--device cpu --size 16 32 32 --profile smoke --steps 1 --rounds 1 --threads 1
             --models acfnet cnn3d)
else
  "$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 3)" \
    || { echo "gpu_smoke: no CUDA GPU visible (benchmarks/gpu_smoke.sh --cpu checks the script)" >&2; exit 3; }
  fit_args=()
  step_args=(--rounds 3 --steps 5)
fi
echo "== data step + 4D-ACFNet fit with AMP and resume"
timeout "$(remaining)" "$PY" benchmarks/gpu_smoke.py "${fit_args[@]}" "$@"
echo "== step benchmark (samples/s, peak memory, ratio to the 3D CNN)"
timeout "$(remaining)" "$PY" benchmarks/gpu_step.py "${step_args[@]}"
echo "gpu_smoke: done in $(( $(date +%s) - start )) s (limit ${LIMIT_S} s)"
