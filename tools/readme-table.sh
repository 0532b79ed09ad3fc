#!/usr/bin/env bash
# Rewrites the load-test table of README.md from a load-test report: the lines between
# the marker comments
#
#   <!-- loadtest:table -->
#   <!-- loadtest:end -->
#
# (both kept) are replaced by what `jumpstarter-loadtest readme-table` prints. Nothing else
# in README.md changes; without both markers, or when the report cannot be read, README.md
# is left as it was.
#
#   tools/readme-table.sh [results.json]    # default: loadtest/report/results.json
set -euo pipefail
cd "$(dirname "$0")/.."

results="${1:-loadtest/report/results.json}"
readme=README.md
begin='<!-- loadtest:table -->'
end='<!-- loadtest:end -->'

grep -qxF "$begin" "$readme" || { echo "$readme has no line $begin" >&2; exit 1; }
grep -qxF "$end" "$readme" || { echo "$readme has no line $end" >&2; exit 1; }

block=$(mktemp)
updated=$(mktemp)
trap 'rm -f "$block" "$updated"' EXIT
cargo run --quiet -p jumpstarter-loadtest -- readme-table --from "$results" >"$block"

# Copy README.md, putting the block (markers included) in place of the old one.
awk -v begin="$begin" -v end="$end" -v block="$block" '
  $0 == begin { while ((getline line < block) > 0) print line; skipping = 1; next }
  $0 == end && skipping { skipping = 0; next }
  !skipping { print }
' "$readme" >"$updated"
cat "$updated" >"$readme"
echo "$readme: load-test table rewritten from $results" >&2
