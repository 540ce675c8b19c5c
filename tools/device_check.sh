#!/usr/bin/env bash
# Everything a session with a lent GPU runs, in one call (docs/benchmarks.md records what it prints).
# Here, first:   bash ../shared/device/wheels.sh            (omegaconf, fvcore, iopath wheels into .whl/)
# Then one device call, carrying .whl:
#   bash tools/device_check.sh                               (logs go to $OUT, else ./device_logs)
# Steps (each bounded so the whole fits a 10-minute call): the test suite (the CUDA tests run there), the
# overhead benchmark on RangeNet (bf16 on CUDA), the flagship at 64 x 2048 in bf16 for 300 iterations, the
# data loader at the real scale beside the model's step rate, and inference in eager / compile / onnxruntime.
set -uo pipefail
OUT=${OUT:-device_logs}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, its output to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee "$OUT/$name.txt"
    local start=$SECONDS
    timeout "$limit" "$@" >> "$OUT/$name.txt" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
step pytest 180 python3 -m pytest -q -x -p no:cacheprovider
step overhead 100 python3 tools/bench_overhead.py --case rangenet --repeats 3
step flagship 150 python3 -m lazytrain.cli train configs/kitti_seg.py dataset.projection.width=2048 \
    model.width=32 model.depth=4 train.max_iter=300 train.amp.enabled=True train.amp.dtype=bf16 \
    dataloader.train.num_workers=8 dataloader.test.num_workers=4 --output-dir /tmp/flagship2048
cp /tmp/flagship2048/metrics.jsonl "$OUT/flagship_metrics.jsonl" 2>/dev/null
step data 50 python3 tools/bench_data.py --width 2048 --density real --model-width 32 --model-depth 4 \
    --workers 0 4 8 --stage-repeats 1
step inference 70 python3 tools/bench_inference.py --device cuda --runs 10
tail -n 3 "$OUT"/*.txt
