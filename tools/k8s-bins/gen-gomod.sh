#!/usr/bin/env bash
# Regenerates go.mod/go.sum for building kube-apiserver, kubectl and the node parts
# (kubelet, kube-proxy, kube-controller-manager, kube-scheduler) of one
# Kubernetes release from the Go module proxy. k8s.io/kubernetes requires its
# staging modules at v0.0.0, so this module must replace every one of them
# with the matching published v0.X.Y release.
# usage: tools/k8s-bins/gen-gomod.sh 1.34.4
set -euo pipefail
version="${1:?usage: $0 <kubernetes version, e.g. 1.34.4>}"
staging="v0.${version#1.}"
cd "$(dirname "$0")"
export GOTOOLCHAIN=local CGO_ENABLED=0
rm -f go.mod go.sum
go mod init jumpstarter-rs.local/k8s-bins >/dev/null 2>&1
upstream_gomod=$(go mod download -json "k8s.io/kubernetes@v${version}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
{
  echo
  echo "require k8s.io/kubernetes v${version}"
  echo
  echo "replace ("
  awk -v sv="$staging" '{
      if ($1 == "replace") { mod = $2; arrow = $3; target = $4 } else { mod = $1; arrow = $2; target = $3 }
      if (arrow == "=>" && target ~ /^\.\/staging\//) printf "\t%s => %s %s\n", mod, mod, sv
    }' "$upstream_gomod"
  echo ")"
} >> go.mod
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v${version}"
for cmd in kubectl kubelet kube-proxy kube-controller-manager kube-scheduler; do
  go get -tool "k8s.io/kubernetes/cmd/${cmd}@v${version}"
done
go mod tidy
