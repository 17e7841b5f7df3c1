#!/usr/bin/env bash
# Per-task overhead of Paladin's in-memory runtime (crate paladin-core) on a
# map/fold sum of squares, for comparison with Colony's map/fold directives.
#
# The benchmark is its own cargo workspace in benches/paladin (not part of the
# main build); it builds into target/paladin. Arguments are passed through:
#
#   scripts/bench-paladin.sh                       # --inputs 100000 --runs 3
#   scripts/bench-paladin.sh --inputs 20000 --runs 5 [--workers 3]
#
# CARGO_BUILD_JOBS defaults to 1 to leave a core free on small machines.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="$repo_root/benches/paladin"
target_dir="$repo_root/target/paladin"

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

cargo build --release --locked \
    --manifest-path "$bench_dir/Cargo.toml" \
    --target-dir "$target_dir"

exec "$target_dir/release/paladin-bench" "$@"
