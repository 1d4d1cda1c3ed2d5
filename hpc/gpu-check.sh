#!/bin/bash
# The GPU checks, on one CUDA machine, from a checkout (torch, transformers and peft installed; prtcore need not be):
#
#   OUT=gpu-results bash hpc/gpu-check.sh
#
# 1. `prt bench --gpu-check`: generation (eager, pipelined, CUDA graphs) and training at TinyLlama-1.1B's shape;
# 2. training steps at a 1B shape with a 152k vocabulary (preset gpu-1b: LoRA twin and transformer reward against
#    peft LoRA, bfloat16);
# 3. the CUDA tests (tests/torch/test_cuda.py), when pytest is installed.
# Each writes its JSON and log under $OUT; the last lines of each log are its summary.
# PYTHON: the interpreter (default python3).
set -u
py=${PYTHON:-python3}
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "hpc/gpu-check.sh: no CUDA GPU for $py (torch missing, or torch.cuda.is_available() is False)" >&2
    exit 2
fi
mkdir -p "${OUT:-gpu-check}"
out=$(cd "${OUT:-gpu-check}" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
status=0
"$py" -m prtcore.apps.bench.gpu --output "$out/gpu.json" > "$out/gpu.log" 2>&1 || status=1
tail -n 12 "$out/gpu.log"
"$py" -m prtcore.apps.bench.gpu --preset gpu-1b --output "$out/gpu-1b.json" > "$out/gpu-1b.log" 2>&1 || status=1
tail -n 14 "$out/gpu-1b.log"
if "$py" -c "import pytest" 2>/dev/null; then
    "$py" -m pytest -q -p no:cacheprovider tests/torch/test_cuda.py > "$out/test_cuda.log" 2>&1 || status=1
    tail -n 5 "$out/test_cuda.log"
else
    echo "pytest is not installed: tests/torch/test_cuda.py not run"
fi
exit $status
