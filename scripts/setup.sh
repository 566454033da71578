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
# xgrammar's C++ core (grammar-constrained decoding: JSON schema, regex, choice, EBNF), which
# Debian lacks: its pinned source distribution from PyPI, checked, and only the C++ sources and
# the headers it vendors (picojson, dlpack) unpacked into the git-ignored .third_party/ (about
# 2 MB, small enough to carry to a GPU machine). CMake builds it as a static library.
xgrammar_version=0.2.9
xgrammar_sha256=87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90
xgrammar_dir="$repo_root/.third_party/xgrammar-$xgrammar_version"
if [ ! -f "$xgrammar_dir/.unpacked" ]; then
  download="$(mktemp -d)"
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary xgrammar \
    "xgrammar==$xgrammar_version" -d "$download"
  archive="$download/xgrammar-$xgrammar_version.tar.gz"
  echo "$xgrammar_sha256  $archive" | sha256sum -c --quiet -
  rm -rf "$xgrammar_dir" && mkdir -p "$repo_root/.third_party"
  tar -xzf "$archive" -C "$repo_root/.third_party" \
    "xgrammar-$xgrammar_version/cpp" "xgrammar-$xgrammar_version/include" \
    "xgrammar-$xgrammar_version/3rdparty/picojson" "xgrammar-$xgrammar_version/3rdparty/dlpack" \
    "xgrammar-$xgrammar_version/LICENSE" "xgrammar-$xgrammar_version/NOTICE"
  rm -rf "$download" "$xgrammar_dir/cpp/tvm_ffi"
  touch "$xgrammar_dir/.unpacked"
fi
