#!/usr/bin/env bash
# One short GPU run (a few minutes, no downloads): the CUDA-only tests, the CIFAR example's CUDA
# path (AMP + channels_last) on FakeData with every method, the step-overhead suite on CUDA and
# its table (both solvers), the teacher's own time per step, the GPU kernels it launches, and
# the time and peak memory of a taught step on 10,000- and 32,000-way heads.
# Usage (repository root, on a machine with a GPU): bash benchmarks/gpu.sh [OUT_DIR]
# Each part runs even when an earlier one fails; the exit status says whether any failed.
set -uo pipefail
out=${1:-${OUT:-runs/gpu}}
mkdir -p "$out"
status=0
part() {  # part NAME FILE COMMAND...: run, keep the output's tail in FILE, remember a failure
  local name=$1 file=$2
  shift 2
  echo "== $name"
  "$@" 2>&1 | tail -40 | tee "$out/$file"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "!! $name failed (exit $rc)"; status=1; fi
}
pip install -q -e ".[dev]" 2>&1 | tail -2
part "device" gpu.txt nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
part "torch" torch.txt python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
part "CUDA tests" cuda_tests.txt python -m pytest -q tests -k cuda
for method in sgd random dht dht-released; do
  part "CIFAR example, $method" "example_$method.txt" python examples/cifar100_cnn15.py \
    --fake-data --iters 30 --eval-every 15 --method "$method" --out "$out/example_$method" \
    --no-progress
done
part "step overhead" step_overhead.txt python -m pytest benchmarks/test_step_overhead.py \
  --benchmark-enable --benchmark-json="$out/step_overhead.json" -q
part "overhead table" overhead_table.md python benchmarks/report.py "$out/step_overhead.json"
part "teacher share" teacher_share.md python benchmarks/teacher_share.py
part "kernels per step" kernel_count.md python benchmarks/kernel_count.py
part "wide heads" wide_heads.md python benchmarks/wide_heads.py --device cuda --no-precision \
  --methods "train step" "taught step" "taught step (pgd)" --repeats 3
exit $status
