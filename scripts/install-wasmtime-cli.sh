#!/usr/bin/env bash
# Makes wasmtime-cli 48 (the `wasmtime serve` that `colony bench-http`
# compares against) available and prints its path. Uses $WASMTIME_CLI or
# the one on PATH when it is 48.x; otherwise builds it from crates.io into
# target/tools (once; about 15 minutes on two cores). Benchmarks only: no
# test needs it.
#
# Built with the features `wasmtime serve` needs (serve, cranelift, the
# pooling allocator, parallel compilation, the compile cache, wasip3 as
# `serve` requires) and without
# the debugger, explorer, wast, wasi-nn and the other subcommands.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version=48.0.8
tools=target/tools

is_48() { "$1" --version 2>/dev/null | grep -q '^wasmtime 48\.'; }

for candidate in "${WASMTIME_CLI:-}" "$(command -v wasmtime || true)" "$tools/bin/wasmtime"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && is_48 "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

echo "install-wasmtime-cli: building wasmtime-cli $version into $tools" >&2
cargo install --quiet --locked --root "$tools" --version "$version" wasmtime-cli \
  --no-default-features \
  --features run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation,cache,wat,logging \
  --target-dir target/tools-build >&2
is_48 "$tools/bin/wasmtime" || { echo "install-wasmtime-cli: $tools/bin/wasmtime is not 48.x" >&2; exit 1; }
echo "$tools/bin/wasmtime"
