#!/usr/bin/env bash
# Runs the README's walkthroughs as written, in a scratch copy of the repository with its
# own HOME (so the service's data and the venv are fresh), and stops what it started.
# Standalone: the block after `walkthrough:serve` runs in the background; the block after
# `walkthrough:steps` runs in a shell that waits for the service first.
# Kubernetes on one machine: the block after `walkthrough:kubernetes` runs as is (it starts
# the test node; `testenv.sh stop` of the scratch copy stops it afterwards). It uses the
# cached Kubernetes binaries (K8S_BIN_DIR) and, with JUMPSTARTER_IMAGE_PROFILE=dev, the
# debug binaries the test command built.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
serve_pid=""
stop_standalone() {
  # Stop the exporter and the service the walkthrough started (by PID, children first).
  if [ -f "$work/steps.pids" ]; then xargs -r kill < "$work/steps.pids" 2>/dev/null || true; sleep 2; rm -f "$work/steps.pids"; fi
  [ -n "$serve_pid" ] && kill -- "-$serve_pid" 2>/dev/null || true
  serve_pid=""
  sleep 1
}
cleanup() {
  stop_standalone
  if [ -x "$work/repo/tools/k8s-testenv/testenv.sh" ]; then "$work/repo/tools/k8s-testenv/testenv.sh" stop || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

block_after() { # marker -> the first ```sh block after it
  awk -v m="<!-- walkthrough:$1 -->" '
    $0 == m { found = 1; next }
    found && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }' "$repo/README.md"
}
block_after serve > "$work/serve.sh"
block_after steps > "$work/steps.sh"
block_after kubernetes > "$work/kubernetes.sh"
[ -s "$work/serve.sh" ] && [ -s "$work/steps.sh" ] && [ -s "$work/kubernetes.sh" ] \
  || { echo "FATAL: walkthrough blocks not found in README.md" >&2; exit 1; }
# Background jobs of the steps (jmp run) are recorded so cleanup can stop them.
# Their output goes to a log of their own: an open pipe would keep this script waiting.
background_jobs() { # script -> script with `jmp run … &` logged and recorded
  { echo 'set -e'; sed 's/^\(jmp run .*\) &$/\1 > "$WALK_DIR\/exporter.log" 2>\&1 \& echo $! >> "$WALK_DIR\/steps.pids"; sleep 15/' "$1"; }
}

# A scratch clone shares the build cache through CARGO_TARGET_DIR, so nothing rebuilds.
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 tar cf - ) | (mkdir -p "$work/repo" && cd "$work/repo" && tar xf -)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
# The Kubernetes binaries stay in the real cache (the scratch HOME below has none).
export K8S_BIN_DIR="${K8S_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/k8s-bin}"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export HOME="$work/home" XDG_DATA_HOME="$work/home/.local/share" NONINTERACTIVE=1
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)/.cache}/pip}"
mkdir -p "$HOME"
cd "$work/repo"

echo "==> walkthrough: starting the service" >&2
# Its own process group, so that cleanup stops cargo and the service it runs too.
setsid bash -e "$work/serve.sh" > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 600); do
  curl -sf --max-time 1 http://127.0.0.1:8081/readyz >/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "FATAL: the service exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf --max-time 1 http://127.0.0.1:8081/readyz >/dev/null || { cat "$work/serve.log" >&2; echo "FATAL: service not ready" >&2; exit 1; }
sed -n '1,40p' "$work/serve.log" >&2

echo "==> walkthrough: the steps" >&2
background_jobs "$work/steps.sh" > "$work/steps-run.sh"
started=$(date +%s)
WALK_DIR="$work" timeout 900 bash "$work/steps-run.sh" 2>&1 | tee "$work/steps.log" >&2 || {
  echo "--- exporter log" >&2; tail -40 "$work/exporter.log" >&2 || true
  echo "--- service log" >&2; tail -40 "$work/serve.log" >&2 || true
  echo "FATAL: the walkthrough failed" >&2; exit 1
}
echo "==> walkthrough passed in $(( $(date +%s) - started ))s" >&2
stop_standalone

echo "==> walkthrough: Kubernetes on one machine" >&2
background_jobs "$work/kubernetes.sh" > "$work/kubernetes-run.sh"
rm -rf .venv
started=$(date +%s)
WALK_DIR="$work" timeout 1500 bash "$work/kubernetes-run.sh" 2>&1 | tee "$work/kubernetes.log" >&2 || {
  echo "--- exporter log" >&2; tail -40 "$work/exporter.log" >&2 || true
  kubeconfig="$work/repo/target/k8s-testenv/admin.kubeconfig"
  if [ -f "$kubeconfig" ]; then
    "$K8S_BIN_DIR/kubectl" --kubeconfig "$kubeconfig" get pods -A -o wide >&2 || true
  fi
  echo "FATAL: the Kubernetes walkthrough failed" >&2; exit 1
}
echo "==> Kubernetes walkthrough passed in $(( $(date +%s) - started ))s" >&2
