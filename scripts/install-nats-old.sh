#!/usr/bin/env bash
# Makes an old nats-server (Debian bookworm's 2.9.10) available for the
# test that `colony serve --nats` refuses a server older than 2.11, and
# prints its path.
#
# The package is downloaded with `apt-get download` and unpacked with
# `dpkg-deb -x` into target/nats-old (once), never installed: it must not
# shadow the 2.11+ nats-server that scripts/install-nats.sh provides.
# $COLONY_NATS_SERVER_OLD, when set, is used instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="2.9.10"
package="nats-server=2.9.10-1+b3"
dest=target/nats-old
bin="$dest/usr/sbin/nats-server"

is_old() {
  "$1" --version 2>/dev/null | grep -q "v$version\b"
}

if [ -n "${COLONY_NATS_SERVER_OLD:-}" ]; then
  is_old "$COLONY_NATS_SERVER_OLD" || {
    echo "install-nats-old: \$COLONY_NATS_SERVER_OLD ($COLONY_NATS_SERVER_OLD) is not nats-server $version" >&2
    exit 1
  }
  echo "$COLONY_NATS_SERVER_OLD"
  exit 0
fi

if [ -x "$bin" ] && is_old "$bin"; then
  echo "$bin"
  exit 0
fi

echo "install-nats-old: fetching $package into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt downloads as the unprivileged _apt user when run as root.
chmod 0777 "$tmp"
fetch() { (cd "$tmp" && apt-get download -q "$package" >&2); }
if ! fetch; then
  # The package lists may be missing or stale on a fresh machine.
  sudo_if_needed=""
  [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -q >&2 || true
  fetch || {
    echo "install-nats-old: apt-get download $package failed" >&2
    exit 1
  }
fi
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb -x "$tmp"/nats-server_*.deb "$dest"
is_old "$bin" || { echo "install-nats-old: $bin is not nats-server $version" >&2; exit 1; }
echo "$bin"
