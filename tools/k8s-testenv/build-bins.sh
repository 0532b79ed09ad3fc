#!/usr/bin/env bash
# Builds the real Kubernetes parts the tests use — kube-apiserver, kubectl,
# etcd and helm, and the node's kubelet, kube-proxy, kube-controller-manager and
# kube-scheduler (same k8s.io/kubernetes pin) — from the Go module proxy into a cache directory, and reuses
# them when the cached binaries already report the pinned versions.
#
#   tools/k8s-testenv/build-bins.sh          # prints the bin directory on its last line
#
# Env: K8S_BIN_DIR (default: $XDG_CACHE_HOME/jumpstarter-rs/k8s-bin or ~/.cache/...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$(dirname "$here")"
KUBE_VERSION=1.34.4
ETCD_VERSION=3.6.16
HELM_VERSION=3.22.0
out="${K8S_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/k8s-bin}"
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw"

# Go's build and module caches for these builds grow to several GiB; they live in a
# scratch directory that is removed afterwards (only the binaries are kept), so the
# Rust build that follows has the disk. JUMPSTARTER_KEEP_GO_CACHE=1 keeps Go's own caches.
if [ "${JUMPSTARTER_KEEP_GO_CACHE:-0}" != 1 ]; then
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/jumpstarter-go.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  export GOCACHE="$scratch/cache" GOMODCACHE="$scratch/mod"
fi

say() { printf '[build-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { say "FATAL: go is not installed; Go >= 1.24 is needed to build the test binaries"; exit 1; }

stamp() { # name version
  [ -f "$out/$1.version" ] && [ "$(cat "$out/$1.version")" = "$2" ] && [ -x "$out/$1" ]
}

kube_ldflags() {
  local ld="-s -w" minor
  minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

build() { # name module-dir version package ldflags
  local name="$1" dir="$2" version="$3" pkg="$4" ldflags="$5" started
  if stamp "$name" "$version"; then say "$name $version: cached in $out"; return; fi
  say "$name $version: building (cold builds take minutes; kube-apiserver is the longest)"
  started=$(date +%s)
  (cd "$tools/$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "$version" > "$out/$name.version"
  say "$name $version: built in $(( $(date +%s) - started ))s"
}

build etcd etcd-bin "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w"
build helm helm-bin "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
build kube-apiserver k8s-bins "$KUBE_VERSION" k8s.io/kubernetes/cmd/kube-apiserver "$(kube_ldflags)"
build kubectl k8s-bins "$KUBE_VERSION" k8s.io/kubernetes/cmd/kubectl "$(kube_ldflags)"
# The single-node cluster for the Helm chart (testenv.sh start --node).
for node_part in kubelet kube-proxy kube-controller-manager kube-scheduler; do
  build "$node_part" k8s-bins "$KUBE_VERSION" "k8s.io/kubernetes/cmd/$node_part" "$(kube_ldflags)"
done

"$out/kube-apiserver" --version >&2
echo "$out"
