#!/usr/bin/env bash
# The standard load test suite: builds the release binaries (router, standalone service,
# load test), runs all eight scenarios and writes the report into loadtest/report/
# (report.md, results.json, *.svg). The run itself takes under 10 minutes on 2 cores.
# Extra arguments go to jumpstarter-loadtest (e.g. --exporters 1000).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p jumpstarter-router -p jumpstarter-standalone -p jumpstarter-loadtest
bin="${CARGO_TARGET_DIR:-target}/release"
exec "$bin/jumpstarter-loadtest" --out "${LOADTEST_OUT:-loadtest/report}" \
    --router-bin "$bin/jumpstarter-router" --standalone-bin "$bin/jumpstarter" \
    all "$@"
