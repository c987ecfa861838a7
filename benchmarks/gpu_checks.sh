#!/usr/bin/env bash
# GPU checks in one go (what a GPU machine adds to the CPU suite): the core's tests marked
# `cuda` (test_trainer.py: AMP float16 / bfloat16, exact resume with the GradScaler;
# test_cuda.py: GPU -> CPU prompt checkpoints, PromptBank on the GPU) and the two GPU benchmarks
# (bank.py's cuda rows, vpt_step_cuda.py). Runs from the repository root with an installed
# workspace or, on a bare machine with torch + timm + safetensors + torchmetrics + tqdm + pytest,
# from the source tree (PYTHONPATH below).
#
#   bash benchmarks/gpu_checks.sh OUT_DIR        # OUT_DIR gets the logs, JSON and markdown
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH="$PWD/shared/prompt-core/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
} 2>&1 | tee "$out/gpu.txt"
$py -m pytest -m cuda -q -p no:cacheprovider shared/prompt-core/tests/test_cuda.py \
  shared/prompt-core/tests/test_trainer.py 2>&1 \
  | tee "$out/pytest_cuda.log" || status=1
$py benchmarks/bank.py --out "$out" || status=1
$py benchmarks/vpt_step_cuda.py --out "$out" || status=1
exit $status
