#!/usr/bin/env bash
# Fuzzes a real worker against its own OpenAPI document with schemathesis:
# every operation of GET /openapi.json gets schema-valid and schema-invalid
# requests, and every answer is checked against the document (status
# codes, content types, headers, body schemas), for server errors, and for
# the API accepting what the document forbids or refusing what it allows.
#
#   scripts/schemathesis.sh [extra schemathesis run arguments]
#
# Installs schemathesis (pinned) into target/schemathesis-venv the first
# time, builds `colony`, serves it on a free port with a fresh data
# directory, deploys a builtin echo function for the fuzzer to call, and
# stops the worker at the end. Exits non-zero on any failure.
# SCHEMATHESIS_MAX_EXAMPLES (default 50) bounds the cases per operation.
#
# What the checks are told (scripts/schemathesis.toml):
# - positive_data_acceptance expects 2xx/404-like answers to schema-valid
#   requests. Some validity is not expressible in a schema: that deployed
#   bytes are a WASI command module or a builtin's name, that durations
#   and sizes parse (`2s`, `64MiB`) and stay under the worker's ceilings,
#   that base64 decodes, that a revision prefix is unambiguous. For those
#   operations 400 is also expected; the check stays on for the others.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version=4.32.5
venv=target/schemathesis-venv
st="$venv/bin/schemathesis"

if ! "$st" --version 2>/dev/null | grep -qF "$version"; then
  echo "schemathesis: installing schemathesis==$version into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --locked -q -p colony-cli
colony=target/debug/colony

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The worker's log (one line per request) stays in target/ for a look after
# the run; its warnings and errors are shown when something fails.
log=target/schemathesis-worker.log
NO_COLOR=1 COLONY_LOG="${COLONY_LOG:-info}" "$colony" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/stdout" 2>"$log" &
pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(sed -n 's/^listening on //p' "$work/stdout" | head -n1)"
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "schemathesis: the worker did not start" >&2
  cat "$log" >&2
  exit 1
fi
echo "schemathesis: worker at $url" >&2

curl -fsS -X PUT "$url/functions/echo?executor=builtin" --data-binary echo >/dev/null

status=0
"$st" --config-file scripts/schemathesis.toml --no-color run "$url/openapi.json" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
  --generation-database none \
  "$@" | tee "$work/report" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
  echo "schemathesis: the worker died during the run" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failed; the worker's warnings and errors ($log):" >&2
  grep -E 'WARN|ERROR|panicked' "$log" | tail -n 50 >&2 || true
fi
if [ "$status" -eq 0 ]; then
  # "Test cases: N generated, N passed" as the plain closing line.
  passed="$(sed -n 's/^ *[0-9]* generated, \([0-9]*\) passed.*/\1/p' "$work/report" | tail -n1)"
  echo "schemathesis: ${passed:-0} passed, 0 failed"
fi
exit "$status"
