#!/usr/bin/env bash
# Fetches (here, on Debian) the -dev packages and runtime libraries that the GPU machine lacks into
# .deps/debs and unpacks them into .deps/root, for scripts/gpu/run.sh to build against there.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="$repo_root/.deps"
# Headers, CMake/pkg-config files and link-time .so symlinks of every find_package in the tree.
dev_packages=(
  nlohmann-json3-dev libpcre2-dev libutf8proc-dev libgtest-dev libgmock-dev libcli11-dev
  libgloo-dev libzmq3-dev cppzmq-dev
  libboost1.81-dev zlib1g-dev  # the HTTP server: Boost.Beast (headers, pruned below) and zlib
)
# The shared libraries those link to (and theirs), for linking and running the tests there.
runtime_packages=(
  libpcre2-8-0 libutf8proc2
  libgloo0 libhiredis0.14 libibverbs1 libnl-3-200 libnl-route-3-200
  libzmq5 libsodium23 libpgm-5.3-0 libnorm1 libbsd0 libmd0
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
  zlib1g
)
# CMake's FindPkgConfig needs a pkg-config; the GPU image may have none.
tool_packages=(pkgconf-bin libpkgconf3)

rm -rf "$deps/debs" "$deps/root"
mkdir -p "$deps/debs" "$deps/root"
(cd "$deps/debs" && apt-get download "${dev_packages[@]}" "${runtime_packages[@]}" "${tool_packages[@]}")
for deb in "$deps"/debs/*.deb; do dpkg -x "$deb" "$deps/root"; done
rm -rf "$deps/root/usr/share/doc" "$deps/root/usr/share/man" "$deps/root/usr/share/lintian"
# Static archives nothing links (the tests use the shared libraries); GTest's stay.
rm -f "$deps"/root/usr/lib/x86_64-linux-gnu/libzmq.a "$deps"/root/usr/lib/x86_64-linux-gnu/libpcre2-*.a

# Debian's Gloo export names its library by absolute path; make it relative to the unpacked
# prefix like the other exports, or CMake there finds no /usr/lib/libgloo.so.0.5.0.
sed -i 's|"/usr/lib/libgloo|"${_IMPORT_PREFIX}/lib/libgloo|g' "$deps"/root/usr/share/cmake/Gloo/GlooTargets-*.cmake

# Boost's headers are 180 MB unpacked, more than may be carried: keep the libraries (whole
# folders, so another compiler's choices of headers still find theirs) that the two sources
# including Boost reach, found by the compiler's own dependency scan.
boost_include="$deps/root/usr/include"
keep="$(mktemp)"
for source in src/server/http/http_server.cpp src/server/http/http_client.cpp; do
  c++ -std=c++20 -MM -DBOOST_ASIO_NO_DEPRECATED \
    -I"$repo_root/src" -I"$boost_include" "$repo_root/$source"
done | tr ' \\' '\n\n' | grep -o "$boost_include/boost/[^ ]*" |
  sed "s|$boost_include/boost/||" | awk -F/ '{ print ($2 == "" ? $1 : $1 "/") }' | sort -u >"$keep"
(cd "$boost_include/boost" && for entry in *; do
  grep -qxF "$entry" "$keep" || grep -qxF "$entry/" "$keep" || rm -rf "$entry"
done)
rm -f "$keep"

# Private requirements of libzmq.pc that we link dynamically and never need the flags of: empty
# .pc files keep pkg-config from failing on them without more -dev packages.
pc_dir="$deps/root/usr/lib/x86_64-linux-gnu/pkgconfig"
for name in krb5-gssapi libsodium openpgm-5.3 norm libbsd; do
  [ -e "$pc_dir/$name.pc" ] || printf 'Name: %s\nDescription: stub\nVersion: 99\n' "$name" \
    >"$pc_dir/$name.pc"
done
# Only the unpacked tree travels to the GPU machine (64 MiB limit on what is carried).
rm -rf "$deps/debs"
du -sh "$deps"
