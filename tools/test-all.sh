#!/usr/bin/env bash
# The one command that runs every test of the repository, from a clean clone:
#
#   tools/test-all.sh [extra cargo test args]
#
# 1. builds the real Kubernetes test binaries (kube-apiserver, etcd, kubectl, helm) from
#    the Go module proxy into a cache directory (reused when present);
# 2. installs the real jumpstarter 0.9.0 Python tools from PyPI into a cached venv;
# 3. starts etcd + kube-apiserver on loopback, and stops them (by PID) on exit;
# 4. runs `cargo test --workspace` — including the tests that need the parts above;
# 5. runs the README's walkthrough as written (tools/readme-walkthrough.sh);
# 6. fuzzes every decoder of network and file input for a bounded time (tools/fuzz.sh).
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

for tool in cargo go python3 openssl curl flock; do
  command -v "$tool" >/dev/null || { echo "FATAL: '$tool' is required but not installed" >&2; exit 1; }
done

# The network-namespace tests (edge suite, impairment) run as root with `ip` and `nft`.
missing=""
command -v nft >/dev/null || missing="$missing nftables"
command -v ip >/dev/null || missing="$missing iproute2"
if [ -n "$missing" ]; then
  say "installing$missing (for the network-namespace tests)"
  if [ "$(id -u)" != 0 ] || ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; }; then
    echo "FATAL: the network-namespace tests need root and the packages:$missing" >&2
    exit 1
  fi
fi

say "building Kubernetes test binaries (cached)"
bin_dir="$(tools/k8s-testenv/build-bins.sh | tail -n 1)"
export K8S_BIN_DIR="$bin_dir"
done_step "Go test binaries"

say "installing jumpstarter 0.9.0 Python tools (cached venv)"
JUMPSTARTER_VENV="$(tools/python-venv.sh | tail -n 1)"
export JUMPSTARTER_VENV
done_step "Python venv"

say "building Rust workspace and tests"
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-run "$@"
done_step "Rust build"

say "starting the test Kubernetes API server"
trap 'tools/k8s-testenv/testenv.sh stop || true' EXIT
tools/k8s-testenv/testenv.sh start
done_step "API server start"

say "running tests"
cargo test --workspace --locked "$@"
done_step "tests"

say "running the README walkthrough as written"
tools/readme-walkthrough.sh
done_step "README walkthrough"

# A separate, bounded step: coverage-guided fuzzing of the decoders (AFL++ via afl.rs; the
# first run installs cargo-afl and builds the instrumented binary into a cache, ~12 min of
# CPU; later runs reuse both). Every target gets JUMPSTARTER_FUZZ_SECONDS (default 15 s).
say "fuzzing the decoders (bounded)"
tools/fuzz.sh --seconds "${JUMPSTARTER_FUZZ_SECONDS:-15}"
done_step "fuzzing"

printf '\nall tests passed in %ss; steps:%b\n' "$(( $(date +%s) - t0 ))" "$timings" >&2
