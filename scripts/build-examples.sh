#!/usr/bin/env bash
# Builds the C example functions and C test guests to wasm32-wasi modules.
#
#   scripts/build-examples.sh [OUT_DIR]     (default: examples/build)
#
# Needs clang with the wasm32-wasi target and wasi-libc (Debian: clang-14,
# lld-14, wasi-libc, libclang-rt-14-dev-wasm32; scripts/install-deps.sh
# installs them). Rebuilds only what is older than its source; writes each
# module atomically, so concurrent runs are safe.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/examples/build}"
mkdir -p "$out"

cc=""
for candidate in "${COLONY_WASI_CC:-}" clang-14 clang; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then cc="$candidate"; break; fi
done
if [ -z "$cc" ]; then
  echo "build-examples: no clang found; run scripts/install-deps.sh" >&2
  exit 1
fi
sysroot="${WASI_SYSROOT:-/usr}"

for src in "$root"/examples/c/*.c "$root"/crates/testsupport/guests/*.c; do
  name="$(basename "$src" .c)"
  dst="$out/$name.wasm"
  if [ -f "$dst" ] && [ "$dst" -nt "$src" ]; then continue; fi
  tmp="$dst.$$.tmp"
  "$cc" --target=wasm32-wasi --sysroot="$sysroot" -O2 -Wall -Wextra -Werror -Wl,--strip-all -o "$tmp" "$src"
  mv -f "$tmp" "$dst"
  echo "built $dst"
done
