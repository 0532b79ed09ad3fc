#!/usr/bin/env bash
# The one command that runs every test of the repository, from a clean clone:
#
#   tools/test-all.sh [extra cargo test args]
#
# 1. builds the real Kubernetes test binaries (kube-apiserver, etcd, kubectl, helm) and Dex
#    (the OIDC provider of the SSO tests, exported as DEX_BIN) from
#    the Go module proxy into a cache directory (reused when present);
# 2. installs the real jumpstarter 0.9.0 Python tools from PyPI into a cached venv;
# 3. starts etcd + kube-apiserver on loopback, and stops them (by PID) on exit;
# 4. runs `cargo test --workspace` — including the tests that need the parts above;
# 5. restarts the API server with a real node (containerd, kubelet, kube-proxy, ...),
#    builds the image from the Dockerfile with buildah, and runs the Helm chart's tests
#    on that node (`cargo test -p jumpstarter-e2e --features node --test chart_node`);
# 6. runs the README's walkthroughs as written (tools/readme-walkthrough.sh);
# 7. fuzzes every decoder of network and file input for a bounded time (tools/fuzz.sh).
# Nothing is skipped: a missing part fails the run with the reason.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
t0=$(date +%s)
step_start=$t0
timings=""
say() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
free_disk() { df -Pk "$repo" | awk 'NR==2 { printf "%.1f GiB free", $4 / 1048576 }'; }
done_step() {
  local now; now=$(date +%s)
  timings="$timings\n  $1: $((now - step_start))s ($(free_disk) after)"
  step_start=$now
}

# A full build without incremental state takes a third of the disk (the incremental
# cache is the largest part of a debug target directory) and no longer on a clean clone.
: "${CARGO_INCREMENTAL:=0}"
export CARGO_INCREMENTAL
say "disk: $(free_disk) on the repository's filesystem"
# What a cold run writes, measured: ~3.5 GiB of Rust build (target/), ~0.7 GiB of fuzzer
# build and the Python venv in the cache, a few GiB of Go caches while the Kubernetes
# binaries build (removed afterwards), the image. Below that a run fails part-way, with
# "No space left on device" or a linker killed by a Bus error; say so now, not 12 min in.
need_gib=8
if [ "$(df -Pk "$repo" | awk 'NR==2 { print $4 }')" -lt $((need_gib * 1048576)) ]; then
  say "WARNING: $(free_disk), a cold run needs about $need_gib GiB: expect a full disk to fail it"
fi
# A failed step names the free disk, the first thing to rule out.
trap 'say "a step failed ($(free_disk))"' ERR

for tool in cargo go python3 openssl curl flock; do
  command -v "$tool" >/dev/null || { echo "FATAL: '$tool' is required but not installed" >&2; exit 1; }
done

# The network-namespace tests (edge suite, impairment) run as root with `ip` and `nft`;
# the node runs containerd, runc and the CNI plugins, and images are built with buildah.
missing=""
command -v nft >/dev/null || missing="$missing nftables"
command -v ip >/dev/null || missing="$missing iproute2"
command -v containerd >/dev/null || missing="$missing containerd"
command -v runc >/dev/null || missing="$missing runc"
[ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
command -v buildah >/dev/null || missing="$missing buildah"
command -v iptables >/dev/null || missing="$missing iptables"
command -v conntrack >/dev/null || missing="$missing conntrack"
command -v busybox >/dev/null || missing="$missing busybox-static"
# The dashboard's browser test drives Debian's headless Chromium through its driver.
command -v chromium >/dev/null || missing="$missing chromium"
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
  say "installing$missing (for the network-namespace tests and the node)"
  if [ "$(id -u)" != 0 ] || ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; }; then
    echo "FATAL: the network-namespace, node and browser tests need root and the packages:$missing" >&2
    exit 1
  fi
fi

say "building Kubernetes test binaries (cached)"
bin_dir="$(tools/k8s-testenv/build-bins.sh | tail -n 1)"
export K8S_BIN_DIR="$bin_dir"
say "building Dex, the OIDC provider of the SSO tests (cached)"
DEX_BIN="$(tools/dex-bin/build.sh | tail -n 1)"
export DEX_BIN
say "building promtool, the chart's alert-rule checker (cached)"
PROMTOOL="$(tools/promtool-bin/build.sh | tail -n 1)"
export PROMTOOL
done_step "Go test binaries"

say "installing jumpstarter 0.9.0 Python tools (cached venv)"
JUMPSTARTER_VENV="$(tools/python-venv.sh | tail -n 1)"
export JUMPSTARTER_VENV
done_step "Python venv"

say "building Rust workspace and tests"
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-run "$@"
cargo test -p jumpstarter-e2e --features node --test chart_node --locked --no-run "$@"
done_step "Rust build"

say "starting the test Kubernetes API server"
fuzz_build_pid=""
trap '[ -z "$fuzz_build_pid" ] || kill -- "-$fuzz_build_pid" 2>/dev/null; tools/k8s-testenv/testenv.sh stop || true' EXIT
tools/k8s-testenv/testenv.sh start
done_step "API server start"

# The fuzz step's slowest part on a cold machine is building cargo-afl and the instrumented
# fuzzer (~13 min of CPU). The test step spends much of its time waiting (timeouts, outages,
# Python tools), so that build runs meanwhile at the lowest CPU priority.
fuzz_build_log="$(mktemp)"
# Its own process group, so that an early exit stops it (and its cargo) too.
setsid nice -n 19 tools/fuzz.sh --build-only > "$fuzz_build_log" 2>&1 &
fuzz_build_pid=$!

say "running tests"
cargo test --workspace --locked "$@"
done_step "tests"

# `testenv.sh stop` must leave nothing of a node behind (no bridge, no firewall table, no
# node process of its state directories).
assert_no_node() {
  if ip link show jsnode0 >/dev/null 2>&1 || nft list table inet jumpstarter_node >/dev/null 2>&1 \
    || pgrep -f -- '--config [^ ]*/node/containerd/config.toml' >/dev/null; then
    echo "FATAL: $*: testenv.sh stop left the node's bridge, firewall table or containerd behind" >&2
    exit 1
  fi
}

# The chart on a real node: the API server restarts with a node next to it; the image is
# built from the Dockerfile with the binaries built above and loaded into the node.
say "starting the test API server with a real node"
tools/k8s-testenv/testenv.sh start --node
done_step "node start"
say "building the image with buildah"
JUMPSTARTER_IMAGE="$(tools/build-image.sh --profile dev --no-build | tail -n 1)"
export JUMPSTARTER_IMAGE
done_step "image build"
say "running the Helm chart's tests on the node ($JUMPSTARTER_IMAGE)"
cargo test -p jumpstarter-e2e --features node --test chart_node --locked "$@"
tools/k8s-testenv/testenv.sh stop
assert_no_node after the node tests
done_step "node tests"

say "running the README walkthroughs as written"
# The image of the Kubernetes walkthrough from the debug binaries built above.
JUMPSTARTER_IMAGE_PROFILE=dev tools/readme-walkthrough.sh
assert_no_node after the Kubernetes walkthrough
done_step "README walkthrough"

# A separate, bounded step: coverage-guided fuzzing of the decoders (AFL++ via afl.rs; the
# first run installs cargo-afl and builds the instrumented binary into a cache, ~12 min of
# CPU, in the background during the test step; later runs reuse both). Every target gets
# JUMPSTARTER_FUZZ_SECONDS (default 15 s).
say "fuzzing the decoders (bounded)"
if ! wait "$fuzz_build_pid"; then
  cat "$fuzz_build_log" >&2
  echo "FATAL: building the fuzzer failed" >&2
  exit 1
fi
fuzz_build_pid=""
rm -f "$fuzz_build_log"
tools/fuzz.sh --seconds "${JUMPSTARTER_FUZZ_SECONDS:-15}"
done_step "fuzzing"

printf '\nall tests passed in %ss; steps:%b\n' "$(( $(date +%s) - t0 ))" "$timings" >&2
