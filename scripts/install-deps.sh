#!/usr/bin/env bash
# Installs what Colony's tests need beside the Rust toolchain, through the
# system package manager, only when missing (safe to run again):
#
#   clang-14, lld-14, wasi-libc, libclang-rt-14-dev-wasm32
#       to build the C guest functions to wasm32-wasi
#       (Debian/Ubuntu, apt-get; sudo when not root)
#   the Rust target wasm32-wasip2 (rustup)
#       to build the wasi:http example component in examples/rust
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi

apt_missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || apt_missing+=("$1"); }

if ! command -v dpkg >/dev/null 2>&1; then
  echo "install-deps: no dpkg/apt-get here; install clang (wasm32-wasi target), lld and wasi-libc by hand" >&2
  exit 1
fi

need_pkg clang-14
need_pkg lld-14
need_pkg wasi-libc
need_pkg libclang-rt-14-dev-wasm32

if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${apt_missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  if ! command -v rustup >/dev/null 2>&1; then
    echo "install-deps: no rustup here; install the Rust target wasm32-wasip2 by hand" >&2
    exit 1
  fi
  echo "install-deps: adding the Rust target wasm32-wasip2" >&2
  rustup target add wasm32-wasip2 >&2
fi
echo "install-deps: ok" >&2
