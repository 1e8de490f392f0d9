#!/usr/bin/env bash
# One run on a lent GPU machine (one NVIDIA GPU, Python 3.12 with a CUDA torch, a
# CPU-only onnxruntime, no network), run from the source tree with that machine's torch:
#   1. the CUDA-gated tests (torch CUDA backends vs CPU, CUDA graph, voxelization, rotated NMS);
#   2. training of the default model (nus-regnetx-400mf-fpn on synthetic scans) for
#      TRAIN_SECONDS (0 skips it; TRAIN_INIT=checkpoint fine-tunes, TRAIN_LR sets the peak
#      rate), checkpoint stored in float16;
#   3. the benchmark: all nine presets in IEEE fp32 and in fp16 with a CUDA graph, the two FPN
#      RegNet presets also in fp32, tf32 and bf16 with CUDA graphs, and the bundled trained model on
#      a simulated 10-sweep scan (realistic post-processing load) when .device-share/ holds
#      sim_scan.npy (python -m regnet_pillars_ros.sim.preview --save-cloud writes one).
#   4. a host-synchronisation report: one 400MF-FPN frame (fp16, with and without the CUDA graph)
#      under torch.cuda.set_sync_debug_mode("warn"), each synchronising call with its line.
# STAGES (default "tests bench syncs": the bundled model is trained; add "train" to train again)
# picks the parts to run.
# Results land in $OUT (or results/gpu): model.pth, train.log, results.tgz (tests, env, bench
# JSON/markdown/PNG, losses). Optional inputs, copied into ignored folders and carried:
# .device-share/ (fixtures/ and realdata/ of ../shared; it becomes ../shared there) and .whl/
# (wheels the machine lacks: shapely for the rotated-NMS tests).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu}"
work="$out/work"
mkdir -p "$work/bench"
export PYTHONPATH="$PWD" REGNET_PILLARS_CACHE="$work/cache" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
TRAIN_SECONDS="${TRAIN_SECONDS:-300}"
STAGES="${STAGES:-tests bench syncs}"
pack() {  # everything so far in one archive (the device tool returns at most 8 files)
    tar czf "$out/results.tgz" -C "$work" --exclude cache --exclude latest.pth .
}
if [ -d .device-share ] && [ ! -e ../shared ]; then ln -s "$PWD/.device-share" ../shared; fi
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PWD:/tmp/site"
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, numpy, platform; print('python', platform.python_version(), 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'numpy', numpy.__version__, 'cpus', __import__('os').cpu_count())"
} 2>&1 | tee "$work/env.txt"

if [[ " $STAGES " == *" tests "* ]]; then
echo "== 1. CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" test/test_runtime_backends.py \
    test/test_model_components.py test/test_rotated_nms.py -k "cuda or onnx" -rA >"$work/tests.txt" 2>&1
tail -n 15 "$work/tests.txt"
pack
fi

if [[ " $STAGES " == *" train "* ]] && [ "$TRAIN_SECONDS" -gt 0 ]; then
    echo "== 2. training for $TRAIN_SECONDS s"
    OMP_NUM_THREADS=1 timeout $((TRAIN_SECONDS + 150)) python3 -m regnet_pillars_ros.train.cli \
        --preset nus-regnetx-400mf-fpn --device cuda --iters 100000 --time-limit "$TRAIN_SECONDS" \
        --batch-size "${TRAIN_BATCH:-8}" --workers "${TRAIN_WORKERS:-14}" --save-every 200 --fp16-storage \
        --lr "${TRAIN_LR:-0.001}" ${TRAIN_INIT:+--init "$TRAIN_INIT"} \
        -o "$work/run" >"$out/train.log" 2>&1
    echo "train exit $?"
    tail -c 1500 "$out/train.log"
    cp "$work/run/latest.pth" "$out/model.pth" 2>/dev/null
    tail -n 3 "$work/run/losses.csv" 2>/dev/null
fi

if [[ " $STAGES " == *" bench "* ]]; then
echo "== 3. benchmark"
bench() {  # name, then bench arguments
    local name=$1
    shift
    timeout 200 python3 -m regnet_pillars_ros.cli bench --device cuda --points 250000 --repeats "${BENCH_REPEATS:-30}" --warmup 3 \
        --json "$work/bench/$name.json" "$@" >"$work/bench/$name.txt" 2>&1 || echo "bench $name failed"
    tail -n 12 "$work/bench/$name.txt"
    pack
}
fpn=(nus-regnetx-400mf-fpn nus-regnetx-1.6gf-fpn)
bench all-fp32 --preset all --precision fp32
bench all-fp16-graph --preset all --precision fp16 --cuda-graph
bench fpn-fp32-graph --preset "${fpn[@]}" --precision fp32 --cuda-graph  # the graph's effect alone
bench fpn-tf32-graph --preset "${fpn[@]}" --precision tf32 --cuda-graph
[ -n "${BENCH_BF16-1}" ] && bench fpn-bf16-graph --preset "${fpn[@]}" --precision bf16 --cuda-graph
if [ -f .device-share/sim_scan.npy ]; then
    for variant in "fp32" "fp16 --cuda-graph"; do
        bench "trained-${variant%% *}" --preset nus-regnetx-400mf-fpn --cloud .device-share/sim_scan.npy \
            --checkpoint regnet_pillars_ros/model/weights/nus-regnetx-400mf-fpn_synthetic.pth --precision $variant
    done
fi
fi

if [[ " $STAGES " == *" syncs "* ]]; then
echo "== 4. host synchronisations per frame"
timeout 120 python3 scripts/sync_report.py >"$work/syncs.txt" 2>&1 || echo "sync report failed"
tail -n 30 "$work/syncs.txt"
fi
pack
ls -la "$out"
