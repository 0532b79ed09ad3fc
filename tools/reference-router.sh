#!/usr/bin/env bash
# Builds the upstream Go router (module github.com/jumpstarter-dev/jumpstarter-controller,
# command cmd/router) from the Go module proxy into a cache directory outside the
# repository, for the load test's side-by-side h2 rows. The binary is reused when present.
#
#   tools/reference-router.sh          # progress on stderr; the binary's path on the last line
#
# Env:
#   REFERENCE_ROUTER_VERSION  module version (default v0.7.1)
#   REFERENCE_ROUTER_DIR      cache directory (default: $XDG_CACHE_HOME/jumpstarter-rs/reference-router
#                             or ~/.cache/jumpstarter-rs/reference-router)
set -euo pipefail
MODULE=github.com/jumpstarter-dev/jumpstarter-controller
VERSION="${REFERENCE_ROUTER_VERSION:-v0.7.1}"
out="${REFERENCE_ROUTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/reference-router}"
bin="$out/router-$VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

say() { printf '[reference-router %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$bin" ]; then
  say "$MODULE/cmd/router $VERSION: cached"
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { say "FATAL: go is not installed"; exit 1; }

build="$out/build-$VERSION"
mkdir -p "$build"
# A throw-away main module that only requires the router's module at the pinned version;
# its go.sum is filled from the module proxy and checked against the checksum database.
cat > "$build/go.mod" <<EOF
module jumpstarter-reference-router

go 1.22.3

require $MODULE $VERSION
EOF
rm -f "$build/go.sum"
started=$(date +%s)
say "$MODULE/cmd/router $VERSION: downloading and building (a cold build takes minutes)"
(
  cd "$build"
  go mod download "$MODULE@$VERSION" >&2
  go get "$MODULE/cmd/router@$VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$bin.tmp" "$MODULE/cmd/router" >&2
)
mv "$bin.tmp" "$bin"
say "$MODULE/cmd/router $VERSION: built in $(( $(date +%s) - started ))s"
echo "$bin"
