#!/usr/bin/env bash
# A smoke run of the load test suite (seconds, tiny sizes): every scenario must complete
# with every transfer intact. Debug binaries; the report goes to a temporary folder
# (or to $LOADTEST_OUT). Extra arguments go to jumpstarter-loadtest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -p jumpstarter-router -p jumpstarter-standalone -p jumpstarter-loadtest
bin="${CARGO_TARGET_DIR:-target}/debug"
out="${LOADTEST_OUT:-$(mktemp -d)}"
"$bin/jumpstarter-loadtest" --smoke --out "$out" \
    --router-bin "$bin/jumpstarter-router" --standalone-bin "$bin/jumpstarter" \
    all "$@"
echo "smoke report: $out/report.md"
