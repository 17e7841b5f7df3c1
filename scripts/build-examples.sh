#!/usr/bin/env bash
# Builds the C example functions and C test guests to wasm32-wasi modules,
# and the Rust examples in examples/rust/* to wasm32-wasip2 components.
#
#   scripts/build-examples.sh [OUT_DIR]     (default: examples/build)
#
# Needs clang with the wasm32-wasi target and wasi-libc (Debian: clang-14,
# lld-14, wasi-libc, libclang-rt-14-dev-wasm32) and the Rust target
# wasm32-wasip2; scripts/install-deps.sh installs them. Rebuilds only what is older than its source; writes each
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

# Rust components: cargo (its lock file pinned) decides what to rebuild.
for manifest in "$root"/examples/rust/*/Cargo.toml; do
  [ -f "$manifest" ] || continue
  dir="$(dirname "$manifest")"
  name="$(basename "$dir")"
  crate="${name//-/_}"
  if ! cargo build --quiet --locked --release --target wasm32-wasip2 \
      --manifest-path "$manifest" --target-dir "$root/target/guest-rust"; then
    echo "build-examples: cannot build $dir (the Rust target wasm32-wasip2: run scripts/install-deps.sh)" >&2
    exit 1
  fi
  built="$root/target/guest-rust/wasm32-wasip2/release/$crate.wasm"
  dst="$out/$name.wasm"
  if [ -f "$dst" ] && cmp -s "$built" "$dst"; then continue; fi
  tmp="$dst.$$.tmp"
  cp "$built" "$tmp"
  mv -f "$tmp" "$dst"
  echo "built $dst"
done
