#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker) from the Go module proxy into a cache
# directory, and reuses the cached binary when it reports the pinned version. The Helm
# chart's tests check the chart's PrometheusRule with it.
#
#   tools/promtool-bin/build.sh     # prints the path of the promtool binary on its last line
#
# Env: PROMTOOL_BIN_DIR (default: $XDG_CACHE_HOME/jumpstarter-rs/promtool-bin or ~/.cache/...).
set -euo pipefail
# Prometheus v3.x is published to the module proxy as v0.3xx.y of github.com/prometheus/prometheus.
PROMETHEUS_VERSION=v0.316.0
out="${PROMTOOL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/promtool-bin}"
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-modcacherw"

say() { printf '[promtool-bin %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { say "FATAL: go is not installed; it is needed to build promtool"; exit 1; }

if [ -x "$out/promtool" ] && [ -f "$out/promtool.version" ] && [ "$(cat "$out/promtool.version")" = "$PROMETHEUS_VERSION" ]; then
  say "promtool $PROMETHEUS_VERSION: cached in $out"
else
  # Go's build and module caches live in a scratch directory that is removed afterwards
  # (only the binary is kept). JUMPSTARTER_KEEP_GO_CACHE=1 keeps Go's own caches.
  if [ "${JUMPSTARTER_KEEP_GO_CACHE:-0}" != 1 ]; then
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/jumpstarter-go.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT
    export GOCACHE="$scratch/cache" GOMODCACHE="$scratch/mod"
  fi
  say "promtool $PROMETHEUS_VERSION: building (a cold build takes about 5 minutes)"
  started=$(date +%s)
  GOBIN="$out/tmp" go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  mv "$out/tmp/promtool" "$out/promtool"
  rmdir "$out/tmp"
  echo "$PROMETHEUS_VERSION" > "$out/promtool.version"
  say "promtool $PROMETHEUS_VERSION: built in $(( $(date +%s) - started ))s"
fi
"$out/promtool" --version >&2 || true
echo "$out/promtool"
