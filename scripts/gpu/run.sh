#!/usr/bin/env bash
# On the GPU machine: configure the cuda preset (tests on) against the carried .deps, build the GPU
# tests with every core, run the op test and the fixture test, the CLI and rank checks, then the
# benchmarks (tidal bench and the transformers baseline), and write their logs under $OUT.
#   run: scripts/gpu/run.sh            (from the repo root, with carry: [".deps", ".third_party"]: the
#                                   Debian files and xgrammar's sources that scripts/setup.sh unpacks)
#   env: SANITIZE=1 also runs the small op cases under compute-sanitizer memcheck;
#        GTEST_FILTER narrows the op test as usual;
#        BENCH=0 skips the benchmarks, BENCH_LAYERS=N runs them on N layers (default 48),
#        BENCH_BASELINE=0 skips the transformers baseline; ELASTIC=0 skips the elastic
#        transitions under load (2 or more GPUs); FAILURE=0 skips a rank's death under load
#        (scripts/gpu/failure.sh, 2 or more GPUs); EPLB=0 skips expert load balancing under
#        skewed routing (bench/eplb_bench.py, every GPU a rank);
#        THROUGHPUT=0 skips the served throughput with default flags (bench/throughput_bench.py);
#        DEEPSEEK_BENCH=0 skips tidal bench on DeepSeek-V2-Lite (27 layers) and DeepSeek-V3's shapes
#        (DEEPSEEK_V3_LAYERS, default 5) and the transformers V2-Lite baseline (DEEPSEEK_BASELINE=0
#        skips that alone);
#        TESTS=0 skips the op, model, CLI and rank tests; TIDAL_BENCH=0 skips tidal bench (one GPU
#        and every GPU); PROFILE=1 first times every kernel of a 2-layer bench under ncu (decode at batch 1 and
#        256), summed by kernel;
#        TIDAL_SOURCE=DIR builds a source snapshot carried in DIR instead of the working tree
#        (make it with scripts/gpu/snapshot.sh DIR, carry DIR), for a tree others are editing.
# $OUT brings back at most 8 files: the bench JSONs and logs go there as they are, everything
# else as logs.tgz.
set -uo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
if [ -n "${TIDAL_SOURCE:-}" ]; then
  # A snapshot of the source made where the code is edited (git archive HEAD | tar -x -C DIR),
  # carried beside the tree: others may be editing the tree itself while this runs.
  snapshot="$repo_root/$TIDAL_SOURCE"
  if [ ! -f "$snapshot/CMakeLists.txt" ]; then
    echo "TIDAL_SOURCE=$TIDAL_SOURCE holds no source tree (carry it)"
    exit 1
  fi
  [ -e "$snapshot/.deps" ] || ln -s "$repo_root/.deps" "$snapshot/.deps"
  [ -e "$snapshot/.third_party" ] || ln -s "$repo_root/.third_party" "$snapshot/.third_party"
  echo "building the snapshot in $TIDAL_SOURCE ($(cat "$snapshot/SNAPSHOT" 2>/dev/null))"
  repo_root="$snapshot"
  cd "$repo_root"
fi
final_out="${OUT:-}"
out="$repo_root/build-cuda/gpu-out"
rm -rf "$out"
mkdir -p "$out"
# Copies files to $OUT as soon as they exist, so a run cut short still brings them back.
keep() {
  [ -n "$final_out" ] || return 0
  for file in "$@"; do [ -f "$out/$file" ] && cp "$out/$file" "$final_out/"; done
  return 0
}
build="$repo_root/build-cuda"
deps="$repo_root/.deps/root"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null) (plus the working tree's changes)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  nvcc --version 2>&1 | tail -2
  c++ --version 2>&1 | head -1
  cmake --version 2>&1 | head -1
} >"$out/env.txt"
cat "$out/env.txt"

configure_args=(--preset cuda -DTIDAL_TESTS=ON
  # The device's compiler is newer than CI's; CI enforces warnings, this run tests the GPU.
  -DTIDAL_WERROR=OFF)
# NCCL (the multi-GPU communicator): the toolkit's, else the one in the torch venv's pip wheel.
torch_nccl=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl
nccl_lib=""
nvcc_root="$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")"
if [ ! -f "$nvcc_root/include/nccl.h" ] && [ -f "$torch_nccl/include/nccl.h" ]; then
  configure_args+=(-DTIDAL_NCCL_ROOT="$torch_nccl")
  nccl_lib="$torch_nccl/lib"
fi
run_path=""
if [ -d "$deps" ]; then
  # Unpacked Debian packages (scripts/gpu/fetch_deps.sh): CMake configs, pkg-config files with
  # their prefix moved under the sysroot, and shared libraries for linking and running.
  libdirs="$deps/usr/lib/x86_64-linux-gnu:$deps/lib/x86_64-linux-gnu:$deps/usr/lib"
  export PKG_CONFIG_LIBDIR="$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$deps"
  export CPATH="$deps/usr/include${CPATH:+:$CPATH}"
  # The linker finds the libraries' own dependencies (libzmq -> libsodium ...) through -rpath-link.
  link_flags="-Wl,-rpath-link,${libdirs//:/ -Wl,-rpath-link,}"
  configure_args+=(-DCMAKE_PREFIX_PATH="$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake;$deps/usr/share/cmake"
    -DCMAKE_EXE_LINKER_FLAGS="$link_flags" -DCMAKE_SHARED_LINKER_FLAGS="$link_flags")
  # bookworm's pkgconf, unless the machine has a pkg-config of its own; a wrapper gives it its
  # libpkgconf, also when a build step re-runs CMake.
  if ! command -v pkg-config >/dev/null; then
    mkdir -p "$repo_root/.deps/bin"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' \
      "$deps/usr/lib/x86_64-linux-gnu" "$deps/usr/bin/pkgconf" >"$repo_root/.deps/bin/pkg-config"
    chmod +x "$repo_root/.deps/bin/pkg-config"
    configure_args+=(-DPKG_CONFIG_EXECUTABLE="$repo_root/.deps/bin/pkg-config")
  fi
  # Only the test processes see the carried libraries: cmake, nvcc and the compilers keep the
  # machine's own.
  run_path="$libdirs"
fi
export LD_LIBRARY_PATH_FOR_TESTS="$run_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
with_deps_libs() { LD_LIBRARY_PATH="$LD_LIBRARY_PATH_FOR_TESTS" "$@"; }

status=0
if ! cmake "${configure_args[@]}" >"$out/build.log" 2>&1; then
  tail -50 "$out/build.log"
  echo "configure failed (full log in build.log)"
  keep build.log
  exit 1
fi
if ! cmake --build "$build" --target gpu_op_test gpu_model_test tidal -j "$(nproc)" >>"$out/build.log" 2>&1; then
  grep -E "error|FAILED" -A5 "$out/build.log" | head -80
  echo "build failed (full log in build.log)"
  keep build.log
  exit 1
fi
echo "build ok"

# The GPUs here, and the library path of multi-GPU runs: the wheel's NCCL only when the build
# linked it (on LD_LIBRARY_PATH it would win over the toolkit's NCCL the binary was built against).
num_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on these machines (PEERS.md)
multi_path="$LD_LIBRARY_PATH_FOR_TESTS"
if [ -n "$nccl_lib" ] && [ -d "$nccl_lib" ]; then multi_path="$nccl_lib${multi_path:+:$multi_path}"; fi

if [ "${TESTS:-1}" = 1 ]; then
  with_deps_libs "$build/tests/gpu/gpu_op_test" --gtest_output="json:$out/op_test.json" \
    >"$out/op_test.log" 2>&1 || status=1
  grep -E "^\[op\]|FAILED|Failure|PASSED|error" "$out/op_test.log" | head -150

  with_deps_libs "$build/tests/gpu/gpu_model_test" --gtest_output="json:$out/model_test.json" \
    >"$out/model_test.log" 2>&1 || status=1
  grep -E "^\[model\]|^\[graphs\]|FAILED|Failure|PASSED|error" "$out/model_test.log" | head -80

  # The CLI on the GPU: the same greedy tokens as on the CPU for a fixture prompt.
  ids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["variants"]["default"]["prompts"][1]["prompt_token_ids"])))' tests/fixtures/tiny-qwen3-moe.reference.json)
  for device in cpu cuda; do
    with_deps_libs "$build/tidal" generate --json --ignore-eos --max-tokens 32 --device "$device" \
      --prompt-token-ids "$ids" >"$out/generate_$device.json" 2>>"$out/generate.log" || status=1
  done
  if python3 -c 'import json,sys; a,b=(json.load(open(f))["token_ids"] for f in sys.argv[1:]); sys.exit(a!=b)' \
      "$out/generate_cpu.json" "$out/generate_cuda.json"; then
    echo "[cli] tidal generate --device cuda: same 32 greedy tokens as --device cpu"
  else
    echo "[cli] tidal generate --device cuda differs from --device cpu (see generate_*.json)"
    status=1
  fi
  # The other families' fixtures on the GPU (bf16, graphs): greedy tokens against their
  # transformers reference.
  # Every other family's fixture on the CUDA backend (decode graphs on), three prompts each,
  # against transformers' fp32 greedy tokens.
  for family in tiny-qwen2-moe tiny-mixtral tiny-deepseek-v2-lite tiny-deepseek-v3; do
    for prompt in 0 1 2; do
      fids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["variants"]["default"]["prompts"][int(sys.argv[2])]["prompt_token_ids"])))' "tests/fixtures/$family.reference.json" "$prompt")
      with_deps_libs "$build/tidal" generate --json --ignore-eos --max-tokens 32 --device cuda \
        --model "tests/fixtures/$family" --prompt-token-ids "$fids" \
        >"$out/generate_${family}_$prompt.json" 2>>"$out/generate.log" || status=1
      if python3 -c 'import json,sys; got=json.load(open(sys.argv[1]))["token_ids"]; want=json.load(open(sys.argv[2]))["variants"]["default"]["prompts"][int(sys.argv[4])]["greedy_token_ids"]; n=next((i for i,(a,b) in enumerate(zip(got,want)) if a!=b), len(want)); print(f"[cli] {sys.argv[3]} prompt {sys.argv[4]} --device cuda: {n} of 32 greedy tokens equal transformers before the first difference"); sys.exit(n!=32)' \
          "$out/generate_${family}_$prompt.json" "tests/fixtures/$family.reference.json" "$family" \
          "$prompt"; then :; else
        status=1
      fi
    done
  done

  # Every rank count up to the GPUs present, one GPU per rank (NCCL): the same greedy tokens as one
  # rank (3 ranks of 8 experts means 9 slots, one redundant replica). tidal is built above.
  if [ "$num_gpus" -ge 2 ]; then
    for ranks in $(seq 1 "$num_gpus"); do
      LD_LIBRARY_PATH="$multi_path" timeout 300 "$build/tidal" generate --device cuda \
        --ranks "$ranks" --json --ignore-eos --max-tokens 24 --prompt-token-ids "$ids" \
        >"$out/generate_ranks$ranks.json" 2>>"$out/multi_gpu.log" || status=1
      [ "$ranks" = 1 ] && continue
      if python3 -c 'import json,sys; a,b=(json.load(open(f))["token_ids"] for f in sys.argv[1:]); sys.exit(a!=b or len(a)!=24)' \
          "$out/generate_ranks1.json" "$out/generate_ranks$ranks.json" 2>>"$out/multi_gpu.log"; then
        echo "[multi-gpu] ranks $ranks == ranks 1: yes"
      else
        echo "[multi-gpu] ranks $ranks == ranks 1: no (see generate_ranks*.json, multi_gpu.log)"
        tail -20 "$out/multi_gpu.log"
        status=1
      fi
    done
    # Expert load balancing across the GPUs: a rebalance every 4 steps moves experts over NVLink
    # (the fixture's routing is uneven enough), and the tokens stay those of one rank.
    LD_LIBRARY_PATH="$multi_path" timeout 300 "$build/tidal" generate --device cuda \
      --ranks "$num_gpus" --expert-slots 6 --enable-eplb --eplb-interval 4 --eplb-window 16 --json \
      --ignore-eos --max-tokens 24 --prompt-token-ids "$ids" >"$out/generate_eplb.json" \
      2>>"$out/multi_gpu.log" || status=1
    if python3 -c 'import json,sys; a,b=(json.load(open(f))["token_ids"] for f in sys.argv[1:]); sys.exit(a!=b or len(a)!=24)' \
        "$out/generate_ranks1.json" "$out/generate_eplb.json" 2>>"$out/multi_gpu.log"; then
      echo "[multi-gpu] ranks $num_gpus with expert load balancing == ranks 1: yes"
    else
      echo "[multi-gpu] ranks $num_gpus with expert load balancing == ranks 1: no (multi_gpu.log)"
      tail -20 "$out/multi_gpu.log"
      status=1
    fi
    grep -E "eplb: rebalance" "$out/multi_gpu.log" | tail -3
  else
    echo "[multi-gpu] skipped: $num_gpus GPU(s)"
  fi
fi  # TESTS

if [ "${SANITIZE:-0}" = 1 ]; then
  with_deps_libs compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$build/tests/gpu/gpu_op_test" --gtest_filter='*odd*:*tiny*:*zero*:*decode*' \
    >"$out/sanitizer.log" 2>&1 || status=1
  tail -20 "$out/sanitizer.log"
fi

# Benchmarks on the Qwen3-30B-A3B shapes with dummy weights, then the transformers baseline on the
# same shapes and card (one after the other: each takes most of the card's memory at 48 layers).
if [ "${BENCH:-1}" = 1 ]; then
  layers="${BENCH_LAYERS:-48}"
  config=bench/configs/qwen3-30b-a3b.json
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv >"$out/card.txt" 2>&1
  if [ "${PROFILE:-0}" = 1 ]; then
    for batch in 1 256; do
      with_deps_libs timeout 180 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
        --log-file "$out/ncu_b$batch.csv" "$build/tidal" bench --device cuda --config "$config" \
        --num-layers 2 --batch-sizes "$batch" --prefill-tokens 0 --iterations 1 --copy-mib 64 \
        --matmul-size 512 >"$out/ncu_b$batch.log" 2>&1 || echo "[profile] ncu at batch $batch failed"
      echo "[profile] decode batch $batch, 2 layers, every launch of the run:"
      python3 tools/ncu_summary.py "$out/ncu_b$batch.csv" 14 2>&1 | head -16
    done
  fi
  if [ "${TIDAL_BENCH:-1}" = 1 ]; then
    if ! with_deps_libs timeout "${BENCH_TIMEOUT:-300}" "$build/tidal" bench --device cuda \
        --config "$config" --num-layers "$layers" --prefill-iterations 2 \
        --json "$out/bench_tidal.json" >"$out/bench_tidal.log" 2>&1; then
      echo "[bench] tidal bench failed"
      status=1
    fi
    grep -v "^I " "$out/bench_tidal.log" | tail -30
    keep bench_tidal.json bench_tidal.log
    # Expert parallelism over every GPU here: NVLink, the all-to-all, decode per rank.
    if [ "$num_gpus" -ge 2 ]; then
      if ! LD_LIBRARY_PATH="$multi_path" timeout "${BENCH_TIMEOUT:-300}" "$build/tidal" bench \
          --device cuda --ranks "$num_gpus" --config "$config" --num-layers "$layers" \
          --iterations 10 --json "$out/bench_ranks.json" >"$out/bench_ranks.log" 2>&1; then
        echo "[bench] tidal bench --ranks $num_gpus failed"
        status=1
      fi
      grep -v "^I " "$out/bench_ranks.log" | tail -30
      keep bench_ranks.json bench_ranks.log
    fi
  fi  # TIDAL_BENCH
  # Served throughput with default flags on one GPU (bench/throughput_bench.py): 64, 256 and
  # 512 streaming clients, then tidal bench's decode rate at the batches the server ran.
  if [ "${THROUGHPUT:-1}" = 1 ]; then
    if ! with_deps_libs timeout "${THROUGHPUT_TIMEOUT:-420}" python3 bench/throughput_bench.py \
        --binary "$build/tidal" --device cuda --config "$config" --num-layers "$layers" \
        --clients "${THROUGHPUT_CLIENTS:-64,256,512}" \
        --out "$out/throughput.json" >"$out/throughput.log" 2>&1; then
      echo "[bench] served throughput failed"
      status=1
    fi
    grep -v '^{' "$out/throughput.log" | tail -14
    keep throughput.json
  fi
  if [ "${BENCH_BASELINE:-1}" = 1 ]; then
    if ! PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-300}" python3 tools/bench_transformers.py \
        --config "$config" --num-layers "$layers" --iterations 3 \
        --json "$out/bench_transformers.json" \
        >"$out/bench_transformers.log" 2>&1; then
      echo "[bench] transformers baseline failed"
      status=1
    fi
    grep -v Warning "$out/bench_transformers.log" | tail -15
    keep bench_transformers.json bench_transformers.log
  fi
  # Elastic transitions under load over every GPU here (scripts/gpu/elastic.sh): 2->4->2 and
  # 2->3->2 on 4 GPUs, 1->2->1 on 2; ELASTIC=0 skips them.
  if [ "${DEEPSEEK_BENCH:-1}" = 1 ]; then
    # DeepSeek-V2-Lite whole (27 layers) and DeepSeek-V3's shapes on as many layers as fit one
    # card with dummy weights (each MoE layer of V3 is 22.5 GB of bf16 experts).
    for model in "deepseek-v2-lite:${DEEPSEEK_V2_LITE_LAYERS:-27}" \
        "deepseek-v3:${DEEPSEEK_V3_LAYERS:-5}"; do
      name="${model%%:*}"
      if ! with_deps_libs timeout "${BENCH_TIMEOUT:-300}" "$build/tidal" bench --device cuda \
          --config "bench/configs/$name.json" --num-layers "${model##*:}" --prefill-iterations 2 \
          --json "$out/bench_$name.json" >"$out/bench_$name.log" 2>&1; then
        echo "[bench] tidal bench $name failed"
        status=1
      fi
      grep -v "^I " "$out/bench_$name.log" | tail -32
      keep "bench_$name.json"
    done
    if [ "${DEEPSEEK_BASELINE:-1}" = 1 ]; then
      if ! PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-300}" python3 tools/bench_transformers.py \
          --config bench/configs/deepseek-v2-lite.json --num-layers "${DEEPSEEK_V2_LITE_LAYERS:-27}" \
          --iterations 3 --json "$out/bench_transformers_deepseek-v2-lite.json" \
          >"$out/bench_transformers_deepseek-v2-lite.log" 2>&1; then
        echo "[bench] transformers DeepSeek-V2-Lite baseline failed"
        status=1
      fi
      grep -v Warning "$out/bench_transformers_deepseek-v2-lite.log" | tail -15
      keep bench_transformers_deepseek-v2-lite.json
    fi
  fi
  if [ "${ELASTIC:-1}" = 1 ] && [ "$num_gpus" -ge 2 ]; then
    if ! LD_LIBRARY_PATH="$multi_path" scripts/gpu/elastic.sh "$build" "$out" "$layers" \
        >"$out/elastic.log" 2>&1; then
      echo "[bench] elastic transitions failed"
      status=1
    fi
    tail -16 "$out/elastic.log"
    keep elastic.json  # its log goes back in logs.tgz (8 files come back at most)
  fi
  # A rank's death under load (scripts/gpu/failure.sh): kill -9 of rank 1 with and without a
  # surviving replica of its experts; detection, pause, recovery, bytes read back, requests lost.
  if [ "${FAILURE:-1}" = 1 ] && [ "$num_gpus" -ge 2 ]; then
    if ! LD_LIBRARY_PATH="$multi_path" scripts/gpu/failure.sh "$build" "$out" "$layers" \
        >"$out/failure.log" 2>&1; then
      echo "[bench] rank failure recovery failed"
      status=1
    fi
    grep -E "^ +[a-z_ ]+  " "$out/failure.log" | tail -30
  fi
  # Expert load balancing under skewed routing over every GPU here: throughput and step time
  # before and after the first rebalance, balancedness, bytes moved, the longest pause. Its JSON
  # comes back inside logs.tgz.
  # Twice: decode-heavy (short prompts, long outputs: the experts' weight reads set the pace), then
  # prefill-heavy (long prompts: their compute does, so the hot rank's extra rows show).
  if [ "${EPLB:-1}" = 1 ] && [ "$num_gpus" -ge 2 ]; then
    for variant in decode prefill; do
      extra=()
      if [ "$variant" = prefill ]; then
        extra=(--prompt-tokens 1024 --max-tokens 8 --clients 32 --eplb-interval 400
          --eplb-window 200 --serve-args "--max-num-batched-tokens 4096 --kv-cache-memory 1073741824")
      fi
      if ! LD_LIBRARY_PATH="$multi_path" timeout "${BENCH_TIMEOUT:-300}" python3 \
          bench/eplb_bench.py --binary "$build/tidal" --device cuda --config "$config" \
          --num-layers "$layers" --ranks "$num_gpus" "${extra[@]}" \
          --out "$out/eplb_$variant.json" >"$out/eplb_$variant.log" 2>&1; then
        echo "[bench] expert load balancing ($variant-heavy) failed"
        status=1
      fi
      tail -9 "$out/eplb_$variant.log"
    done
  fi
fi

echo "gpu tests: $([ $status = 0 ] && echo PASSED || echo FAILED) (logs in $out)"
[ -n "$final_out" ] && tar czf "$final_out/logs.tgz" -C "$out" .
exit $status
