#!/usr/bin/env bash
# Here, before a GPU run: the committed HEAD as a plain source tree in DIR (default .head-src,
# ignored through .git/info/exclude), for scripts/gpu/run.sh with TIDAL_SOURCE=DIR and DIR carried.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir="${1:-.head-src}"
rm -rf "$dir"
mkdir -p "$dir"
git archive HEAD | tar -x -C "$dir"
git log -1 --format='%h %s' >"$dir/SNAPSHOT"
echo "$dir: $(cat "$dir/SNAPSHOT")"
