#!/usr/bin/env bash
# The standard load test suite: builds the release binaries (router, standalone service,
# load test), runs all nine scenarios and writes the report into loadtest/report/
# (report.md, results.json, *.svg). Every scenario runs 3 times (--repeat; each figure is
# the median): about 10 minutes per repetition on 2 cores. loadtest/report/analysis.md is
# written by hand and left alone; tools/readme-table.sh then updates README.md's table.
# Extra arguments go to jumpstarter-loadtest (e.g. --exporters 1000).
#
# The h2 rows of scenarios 1–4 are also run against the upstream Go router
# (jumpstarter-controller v0.7.1, cmd/router), built into a cache folder outside the
# repository by tools/reference-router.sh. That router reads a ConfigMap through the
# Kubernetes API, so the project's test API server is started (tools/k8s-testenv) and the
# ConfigMap created there. When any of this fails, the report says why and the run goes
# on without those rows. LOADTEST_REFERENCE=0 leaves the Go router out.
#
# The controller scenario (7) also runs jumpstarter-controller on that API server.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[loadtest %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cargo build --release -p jumpstarter-router -p jumpstarter-standalone -p jumpstarter-loadtest \
  -p jumpstarter-controller
bin="${CARGO_TARGET_DIR:-target}/release"

namespace=jumpstarter-loadtest
reference=()
# The last line of a log, without leading blanks.
last_words() { tail -n 1 "$1" | sed 's/^[[:space:]]*//'; }
# Prepares the Go router; on failure prints the reason (its last words) and returns 1.
prepare_reference() {
  local log router env_dir kubeconfig kubectl
  log="$(mktemp)"
  # The report labels its rows with this version.
  if ! router="$(REFERENCE_ROUTER_VERSION=v0.7.1 tools/reference-router.sh 2> >(tee "$log" >&2) | tail -n 1)" || [ ! -x "$router" ]; then
    sleep 0.5 # let tee finish the log
    echo "building it with tools/reference-router.sh failed: $(last_words "$log")"
    rm -f "$log"; return 1
  fi
  if ! env_dir="$(tools/k8s-testenv/testenv.sh ensure 2> >(tee "$log" >&2) | tail -n 1)"; then
    sleep 0.5
    echo "the test Kubernetes API server (tools/k8s-testenv) did not start: $(last_words "$log")"
    rm -f "$log"; return 1
  fi
  env_dir="${env_dir#ready: }"
  kubeconfig="$env_dir/admin.kubeconfig"
  kubectl="$(sed -n 's/^KTE_BIN_DIR=//p' "$env_dir/env")/kubectl"
  # The router reads ConfigMap jumpstarter-controller in $NAMESPACE; of its `config`
  # entry only grpc.keepalive matters to it (values as the upstream chart sets them).
  if ! { "$kubectl" --kubeconfig "$kubeconfig" create namespace "$namespace" \
           --dry-run=client -o yaml | "$kubectl" --kubeconfig "$kubeconfig" apply -f - \
         && "$kubectl" --kubeconfig "$kubeconfig" apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: jumpstarter-controller
  namespace: $namespace
data:
  config: |
    grpc:
      keepalive:
        minTime: 1s
        permitWithoutStream: true
EOF
       } >"$log" 2>&1; then
    echo "creating its ConfigMap failed: $(last_words "$log")"
    rm -f "$log"; return 1
  fi
  rm -f "$log"
  printf '%s\n%s\n' "$router" "$kubeconfig"
}

# The test API server for scenario 7 on Kubernetes.
kube=()
if env_dir="$(tools/k8s-testenv/testenv.sh ensure | tail -n 1)"; then
  kube=(--kubeconfig "${env_dir#ready: }/admin.kubeconfig"
        --controller-bin "$bin/jumpstarter-controller")
else
  say "the test Kubernetes API server did not start: scenario 7 runs on the embedded store only"
fi

if [ "${LOADTEST_REFERENCE:-1}" = 0 ]; then
  reference=(--reference-unavailable "left out (LOADTEST_REFERENCE=0)")
elif out="$(prepare_reference)"; then
  router="$(sed -n 1p <<<"$out")"; kubeconfig="$(sed -n 2p <<<"$out")"
  say "Go router: $router"
  reference=(--reference-router "$router" --reference-kubeconfig "$kubeconfig"
             --reference-namespace "$namespace")
else
  say "Go router unavailable: $out"
  reference=(--reference-unavailable "$out")
fi

# --pin: the saturated round trips also with the router on a CPU of its own.
exec "$bin/jumpstarter-loadtest" --out "${LOADTEST_OUT:-loadtest/report}" \
    --router-bin "$bin/jumpstarter-router" --standalone-bin "$bin/jumpstarter" \
    --pin "${kube[@]}" "${reference[@]}" all "$@"
