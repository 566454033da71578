#!/usr/bin/env bash
# A rank's death under streaming load on this machine's GPUs (bench/failure_bench.py): the
# Qwen3-30B-A3B shapes with dummy weights and graphs on, one GPU per rank, NCCL, `kill -9` of
# rank 1 mid-decode, twice: with a surviving replica of every expert (ranks x slots = 2 x 128, the
# survivors reroute) and without (ranks x slots = 128: the lost rank's experts must be read back
# from the checkpoint, and since the survivors cannot hold every expert a replacement joins the
# recovery on the freed GPU). Writes failure_replicas.json, failure_reload.json and their serve
# logs under the output folder.
#   scripts/gpu/failure.sh BUILD_DIR OUT_DIR [LAYERS]   (run.sh calls it; LD_LIBRARY_PATH as for
#                                                        its multi-GPU part)
set -uo pipefail
build="$1"
out="$2"
layers="${3:-48}"
export NCCL_NVLS_ENABLE=0
num_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$num_gpus" -lt 2 ]; then
  echo "[failure] skipped: $num_gpus GPU(s)"
  exit 0
fi
ranks=$(( num_gpus >= 4 ? 4 : 2 ))
status=0
for variant in replicas reload; do
  # 128 experts: 2 copies of each (replicas), or exactly one (reload).
  slots=$(( variant == "replicas" ? 256 / ranks : 128 / ranks ))
  timeout "${FAILURE_TIMEOUT:-400}" python3 bench/failure_bench.py --binary "$build/tidal" \
    --device cuda --config bench/configs/qwen3-30b-a3b.json --num-layers "$layers" \
    --ranks "$ranks" --expert-slots "$slots" --kill-rank 1 --clients 16 --max-tokens 256 \
    --label "$variant" --out "$out/failure_$variant.json" || status=1
done
exit $status
