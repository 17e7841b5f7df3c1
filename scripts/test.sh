#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first,
# then fuzzes a real worker against its OpenAPI document (schemathesis.sh).
#
#   scripts/test.sh [extra cargo test arguments]
#
# This is the command CI runs (.ci/run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-deps.sh
scripts/install-nats.sh >/dev/null
scripts/install-nats-old.sh >/dev/null
scripts/build-examples.sh target/wasm-guests >/dev/null
cargo test --workspace --locked "$@"
scripts/schemathesis.sh
