#!/usr/bin/env bash
# Our latent attention kernel beside FlashInfer's Hopper MLA kernel (tools/gpu/mla_compare.cu).
#   here:       scripts/gpu/mla_compare.sh build   (fetches the pinned flashinfer-python wheel from
#               PyPI into .whl/, unpacks its headers, CUTLASS and CCCL into build-cuda/flashinfer/,
#               and builds build-cuda/mla/mla_compare with nvcc)
#   GPU side:   scripts/gpu/mla_compare.sh run     (with carry: ["build-cuda/mla"]; writes
#               $OUT/mla_compare.json and prints the table)
# The headers are built against here rather than carried: with CUTLASS and CCCL they are about
# 100 MB, over what a device call carries. FlashInfer's headers need the CCCL it ships (CUDA
# 13.0's lacks cuda::fast_mod_div), so they come before the toolkit's.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
version=0.7.4
case "${1:-}" in
  build)
    wheel=".whl/flashinfer_python-$version-py3-none-any.whl"
    if [ ! -f "$wheel" ]; then
      mkdir -p .whl
      .venv/bin/pip download -q --no-deps -d .whl "flashinfer-python==$version"
    fi
    headers=build-cuda/flashinfer
    if [ ! -f "$headers/$version" ]; then
      rm -rf "$headers" && mkdir -p "$headers"
      unzip -q -o "$wheel" 'flashinfer/data/include/*' 'flashinfer/data/cutlass/include/*' \
        'flashinfer/data/cccl/*' -d "$headers"
      touch "$headers/$version"
    fi
    data="$headers/flashinfer/data"
    mkdir -p build-cuda/mla
    nvcc=/usr/local/cuda/bin/nvcc
    flags=(-std=c++20 -O3 -arch=sm_90a --expt-relaxed-constexpr -Isrc)
    "$nvcc" "${flags[@]}" -c src/kernels/cuda/latent_attention.cu -o build-cuda/mla/ours.o
    "$nvcc" "${flags[@]}" -isystem "$data/cccl/libcudacxx/include" -isystem "$data/cccl/cub" \
      -isystem "$data/cccl/thrust" -isystem "$data/include" -isystem "$data/cutlass/include" \
      -c tools/gpu/mla_compare.cu -o build-cuda/mla/mla_compare.o
    "$nvcc" -arch=sm_90a build-cuda/mla/mla_compare.o build-cuda/mla/ours.o -lcublas \
      -o build-cuda/mla/mla_compare
    echo "built build-cuda/mla/mla_compare (FlashInfer $version)"
    ;;
  run)
    export NCCL_NVLS_ENABLE=0
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    date -u +%Y-%m-%dT%H:%M:%SZ
    build-cuda/mla/mla_compare "${OUT:-build-cuda/mla}/mla_compare.json"
    ;;
  *)
    echo "usage: scripts/gpu/mla_compare.sh build|run" >&2
    exit 2
    ;;
esac
