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
