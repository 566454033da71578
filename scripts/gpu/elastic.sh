#!/usr/bin/env bash
# Elastic transitions on this machine's GPUs under streaming load (bench/elastic_bench.py): the
# Qwen3-30B-A3B shapes with dummy weights, one GPU per rank, NCCL. On 4 GPUs: 2->4->2 and 2->3->2,
# then 3->2 removing rank 0 (its experts must move over NVLink); on 2 GPUs: 1->2->1 and 2->1
# removing rank 0. Writes elastic.json and elastic.serve.log under the output folder.
#   scripts/gpu/elastic.sh BUILD_DIR OUT_DIR [LAYERS]   (run.sh calls it; LD_LIBRARY_PATH as for
#                                                        its multi-GPU part)
set -uo pipefail
build="$1"
out="$2"
layers="${3:-48}"
export NCCL_NVLS_ENABLE=0
num_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$num_gpus" -ge 4 ]; then
  start=2
  sizes="4,2,3,2,3,2-0"
elif [ "$num_gpus" -ge 2 ]; then
  start=1
  sizes="2,1,2,1-0"
else
  echo "[elastic] skipped: $num_gpus GPU(s)"
  exit 0
fi
nvlink=0
if [ -f "$out/bench_ranks.json" ]; then
  nvlink=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nvlink_p2p"]["GB_per_s"])' \
    "$out/bench_ranks.json" 2>/dev/null || echo 0)
fi
# 128 experts in 64 slots per rank, so every size down to 2 fits (1 rank needs all 128).
slots=$(( start == 1 ? 128 : 64 ))
timeout "${ELASTIC_TIMEOUT:-540}" python3 bench/elastic_bench.py --binary "$build/tidal" \
  --device cuda --config bench/configs/qwen3-30b-a3b.json --num-layers "$layers" \
  --start "$start" --sizes "$sizes" --expert-slots "$slots" --max-ranks "$num_gpus" \
  --clients 16 --max-tokens 256 --nvlink-gbps "$nvlink" --out "$out/elastic.json"
