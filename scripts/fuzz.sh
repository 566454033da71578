#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for a bounded time from its
# committed seed corpus; a crash, leak, sanitizer report or timeout fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DTIDAL_FUZZ=ON -DTIDAL_TESTS=OFF >/dev/null
cmake --build build-fuzz --target jinja_fuzz request_fuzz http_fuzz
for target in jinja request http; do
  work="build-fuzz/corpus-$target"
  mkdir -p "$work"
  echo "+ ${target}_fuzz for ${seconds} s"
  log="build-fuzz/$target.log"
  if ! build-fuzz/tests/fuzz/${target}_fuzz -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build-fuzz/ "$work" \
      "tests/fuzz/corpus/$target" >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: ${target}_fuzz failed (the input is saved under build-fuzz/)" >&2
    exit 1
  fi
  grep -E "stat::(number_of_executed_units|new_units_added)" "$log"
done
echo "fuzz: no crash in ${seconds} s per target"
