#!/usr/bin/env bash
# Fuzzes a real worker against its own OpenAPI document with schemathesis:
# every operation of GET /openapi.json gets schema-valid and schema-invalid
# requests, and every answer is checked against the document (status
# codes, content types, headers, body schemas), for server errors, and for
# the API accepting what the document forbids or refusing what it allows.
#
#   scripts/schemathesis.sh [extra schemathesis run arguments]
#
# Two passes, each on a fresh worker (a free port, a new data directory)
# with a builtin `echo` function deployed for the fuzzer to call:
#   open    no tokens: the document allows anonymous calls.
#   tokens  an admin and an invoke token; the fuzzer sends the admin one,
#           and `ignored_auth` checks that calls without it (or with a
#           wrong one) are refused.
# Installs schemathesis (pinned with everything it pulls in:
# scripts/schemathesis-requirements.txt) into target/schemathesis-venv the
# first time and builds `colony`. Exits non-zero on any failure.
# SCHEMATHESIS_MAX_EXAMPLES (default 50) bounds the cases per operation;
# SCHEMATHESIS_SEED replays a run.
#
# Every check runs (`--checks all`). What they are told
# (scripts/schemathesis.toml): positive_data_acceptance expects 2xx/404-like
# answers to schema-valid requests. Some validity is not expressible in a
# schema: that deployed bytes are a WASI command module or a builtin's
# name, that durations and sizes parse (`2s`, `64MiB`) and stay under the
# worker's ceilings, that a task's function exists with an attempt timeout
# under the ceiling, that a function served at /http is a cgi function.
# For deploy, task submission and /http 400 is also expected; the check
# stays as it is for every other operation.
# GET /directives/{id}/events is left out: it streams until the client
# goes away, which the fuzzer cannot do; its tests are in Rust
# (crates/cli/tests/all/directives.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

requirements=scripts/schemathesis-requirements.txt
venv=target/schemathesis-venv
st="$venv/bin/schemathesis"
stamp="$venv/installed-requirements.txt"

if ! cmp -s "$requirements" "$stamp" || ! "$st" --version >/dev/null 2>&1; then
  echo "schemathesis: installing $(grep '^schemathesis==' "$requirements") into $venv" >&2
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
  "$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$requirements"
  cp "$requirements" "$stamp"
fi

cargo build --locked -q -p colony-cli
colony=target/debug/colony

work="$(mktemp -d)"
pid=""
stop_worker() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
cleanup() {
  stop_worker
  rm -rf "$work"
}
trap cleanup EXIT

admin="schemathesis-admin-$RANDOM$RANDOM-token"
invoke="schemathesis-invoke-$RANDOM$RANDOM-token"
seed="${SCHEMATHESIS_SEED:-$RANDOM}"
total=0

# pass NAME [serve flags...] -- [schemathesis flags...]
pass() {
  local name="$1"
  shift
  local serve=()
  while [ "$1" != "--" ]; do
    serve+=("$1")
    shift
  done
  shift
  # The worker's log (one line per request) stays in target/ for a look
  # after the run; its warnings and errors are shown when something fails.
  local log="target/schemathesis-$name.log"
  mkdir -p "$work/$name"
  NO_COLOR=1 COLONY_LOG="${COLONY_LOG:-info}" "$colony" serve --listen 127.0.0.1:0 \
    --data-dir "$work/$name/data" "${serve[@]}" >"$work/$name/stdout" 2>"$log" &
  pid=$!
  local url=""
  for _ in $(seq 1 300); do
    url="$(sed -n 's/^listening on //p' "$work/$name/stdout" | head -n1)"
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "schemathesis[$name]: the worker did not start" >&2
    cat "$log" >&2
    return 1
  fi
  echo "schemathesis[$name]: worker at $url" >&2
  curl -fsS -X PUT -H "Authorization: Bearer $admin" \
    "$url/functions/echo?executor=builtin" --data-binary echo >/dev/null

  local status=0
  "$st" --config-file scripts/schemathesis.toml --no-color run "$url/openapi.json" \
    --checks all \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --seed "$seed" \
    --generation-database none \
    --exclude-operation-id directive_events \
    "$@" | tee "$work/$name/report" || status=$?

  if ! kill -0 "$pid" 2>/dev/null; then
    echo "schemathesis[$name]: the worker died during the run" >&2
    status=1
  fi
  stop_worker
  if [ "$status" -ne 0 ]; then
    echo "schemathesis[$name]: failed; the worker's warnings and errors ($log):" >&2
    grep -E 'WARN|ERROR|panicked' "$log" | grep -v 'no tokens configured' | tail -n 50 >&2 || true
    return "$status"
  fi
  # "Test cases: N generated, N passed".
  local passed
  passed="$(sed -n 's/^ *[0-9]* generated, \([0-9]*\) passed.*/\1/p' "$work/$name/report" | tail -n1)"
  total=$((total + ${passed:-0}))
}

pass open -- "$@"
pass tokens --admin-token "$admin" --invoke-token "$invoke" -- \
  --header "Authorization: Bearer $admin" "$@"

echo "schemathesis: $total passed, 0 failed"
