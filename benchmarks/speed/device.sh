#!/usr/bin/env bash
# Every GPU check of benchmarks/speed in one script, so that a short window on a CUDA machine
# is enough (about 5 minutes on an H100-class GPU):
#
#     bash benchmarks/speed/device.sh [OUT_DIR]       (default: benchmarks/speed/device)
#
# 1. training: an RSC and an SPL epoch of 32k samples at the method's widths (4096/2048, 4096-d
#    inputs, 200 classes) in fp32, tf32 and bf16, beside the authors'-style loop (target: an RSC
#    epoch under 0.5 s);
# 2. MAP@all at 10k x 10k and 50k x 50k, on the GPU and on the CPU, same data;
# 3. the whole default pipeline (`dvc repro --force`; params.yaml's device: auto takes the GPU).
# Results land in OUT_DIR as the benchmarks write them; copy the figures into RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-benchmarks/speed/device}
mkdir -p "$out"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
PY
python benchmarks/speed/training.py --device cuda --samples 32000 --val-samples 2048 \
    --precisions fp32 tf32 bf16 | tee "$out/training.md"
python benchmarks/speed/evaluation.py --device cuda --sizes 10000 50000 --loop-max 0 \
    --json "$out/evaluation_cuda.json" | tee "$out/evaluation_cuda.txt"
python benchmarks/speed/evaluation.py --device cpu --sizes 10000 50000 --loop-max 0 --repeat 1 \
    --json "$out/evaluation_cpu.json" | tee "$out/evaluation_cpu.txt"
python benchmarks/speed/pipeline.py --json "$out/pipeline.json" | tee "$out/pipeline.txt"
