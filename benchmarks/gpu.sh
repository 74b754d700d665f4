#!/usr/bin/env bash
# One short GPU run: the step-overhead suite on CUDA, its table, and the CUDA-only tests.
# Usage (repository root, on a machine with a GPU): bash benchmarks/gpu.sh [OUT_DIR]
set -euo pipefail
out=${1:-${OUT:-runs/gpu}}
mkdir -p "$out"
pip install -q -e ".[dev]" 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
python -m pytest -q tests/test_reliability.py -k cuda 2>&1 | tail -3 | tee "$out/cuda_tests.txt"
python -m pytest benchmarks/test_step_overhead.py --benchmark-enable \
  --benchmark-json="$out/step_overhead.json" -q 2>&1 | tail -40 | tee "$out/step_overhead.txt"
python benchmarks/report.py "$out/step_overhead.json" | tee "$out/overhead_table.md"
python benchmarks/teacher_share.py | tee "$out/teacher_share.md"
