#!/usr/bin/env bash
# GPU checks for the lent device machine (one NVIDIA GPU, Python 3.12 with a CUDA torch, a
# CPU-only onnxruntime, no network). Runs from the source tree with that machine's torch: the
# CUDA-gated tests of the model layer, then the GPU benchmark of all nine presets in fp32 and
# fp16. Results land in $OUT (or results/gpu). Needs numpy and pytest there; tests that need a
# package the machine lacks (shapely, onnx) are left out by -k, not installed. The parity tests
# read ../shared/fixtures next to the repository and skip when it is not there. Not yet run on a
# device: the first session with one should fix what it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD" REGNET_PILLARS_CACHE="$out/cache"
python3 - <<'EOF' | tee "$out/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0))
EOF
python3 -m pytest -q -p no:cacheprovider test/test_model_parity.py test/test_model_components.py \
    test/test_runtime_backends.py -k "cuda or parity or final_boxes" 2>&1 | tee "$out/tests.txt" || true
for precision in fp32 fp16; do
    python3 -m regnet_pillars_ros.cli bench --preset all --device cuda --precision "$precision" \
        --points 250000 --repeats 20 --warmup 3 --json "$out/bench-cuda-$precision.json" | tee "$out/bench-$precision.txt"
done
