#!/usr/bin/env bash
# Installs every Debian package tidal needs to build and test (one list, one place).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git xz-utils
  nlohmann-json3-dev   # JSON: configs, tokenizer.json, safetensors headers, API
  libpcre2-dev         # Unicode regexes of tokenizer pre-tokenizers (\p{L}, lookahead)
  libutf8proc-dev      # Unicode normalisation (NFC/NFKC) for tokenizers
  libgtest-dev         # unit tests
  libcli11-dev         # command-line parsing of the tidal CLI
  libgloo-dev libzmq3-dev cppzmq-dev  # CPU data plane (Gloo) and control plane (ZeroMQ)
  libboost1.81-dev     # Boost.Beast on Asio (header-only): the event-driven HTTP server
  zlib1g-dev           # gzip and deflate request bodies
  clang-14 libclang-rt-14-dev  # libFuzzer targets (request parser, Jinja), run in CI
  python3 python3-venv # test tooling only, never a runtime dependency
)
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Python test tooling (tests/api) in a git-ignored .venv at the repo root; pip runs only when the
# venv or one of the pinned requirements is missing, so reruns are fast.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
requirements="$repo_root/tests/requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" - "$requirements" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        if pinned and version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
fi
