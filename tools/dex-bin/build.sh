#!/usr/bin/env bash
# Builds Dex (https://dexidp.io), the OpenID Connect provider of the SSO tests, from the
# Go module proxy into a cache directory, and reuses the cached binary when it reports
# the pinned version.
#
#   tools/dex-bin/build.sh          # prints the path of the dex binary on its last line
#
# Dex's own go.mod replaces github.com/dexidp/dex/api/v2 with a local directory, so
# `go install github.com/dexidp/dex/cmd/dex@…` refuses it; this directory is a wrapper
# module that requires both modules at pinned versions (go.mod/go.sum) and builds the
# command as a Go tool dependency. Dex tags releases v2.x.y under a module path without
# /v2, so the pin is the pseudo-version of the release commit (DEX_VERSION below).
# Storage is in memory in the tests, so the binary is built without cgo (no sqlite3).
#
# Env: DEX_BIN_DIR (default: $XDG_CACHE_HOME/jumpstarter-rs/dex-bin or ~/.cache/...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The release whose commit go.mod pins (v0.0.0-20260303133905-11d2eeb52b42).
DEX_VERSION=v2.45.1
out="${DEX_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/dex-bin}"
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw"

say() { printf '[dex-bin %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { say "FATAL: go is not installed; Go >= 1.25 is needed to build dex"; exit 1; }

if [ -x "$out/dex" ] && [ -f "$out/dex.version" ] && [ "$(cat "$out/dex.version")" = "$DEX_VERSION" ]; then
  say "dex $DEX_VERSION: cached in $out"
else
  # Go's build and module caches live in a scratch directory that is removed afterwards
  # (only the binary is kept). JUMPSTARTER_KEEP_GO_CACHE=1 keeps Go's own caches.
  if [ "${JUMPSTARTER_KEEP_GO_CACHE:-0}" != 1 ]; then
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/jumpstarter-go.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT
    export GOCACHE="$scratch/cache" GOMODCACHE="$scratch/mod"
  fi
  say "dex $DEX_VERSION: building (a cold build takes a few minutes)"
  started=$(date +%s)
  (cd "$here" && go build -trimpath -ldflags "-s -w -X main.version=$DEX_VERSION" -o "$out/dex.tmp" \
    github.com/dexidp/dex/cmd/dex)
  mv "$out/dex.tmp" "$out/dex"
  echo "$DEX_VERSION" > "$out/dex.version"
  say "dex $DEX_VERSION: built in $(( $(date +%s) - started ))s"
fi
"$out/dex" version >&2
echo "$out/dex"
