#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads network or file input (fuzz/), for a
# bounded time per target, with AFL++ through afl.rs on the stable toolchain:
#
#   tools/fuzz.sh [--seconds N] [TARGET...]     # default: 20 s for every target
#   tools/fuzz.sh --build-only                   # steps 1 and 2 only (e.g. ahead of time)
#
# 1. installs cargo-afl (and the AFL++ runtime it builds) into a cache directory, reused
#    when present;
# 2. builds the instrumented fuzzer binary (fuzz/src/main.rs);
# 3. runs afl-fuzz on each target from its committed seeds (fuzz/corpus/<target>), with a
#    time limit per input (-t) and a memory limit (-m) so that slow or greedy inputs count
#    as failures;
# 4. prints executions, speed, corpus size and findings per target. A crash or a hang is
#    copied into fuzz/regressions/<target>/ (replayed by `cargo test -p jumpstarter-fuzz`
#    from then on) and fails the run.
#
# Env: JUMPSTARTER_FUZZ_CACHE (cargo-afl, AFL++ and the instrumented build; default:
# $XDG_CACHE_HOME/jumpstarter-rs/cargo-afl or ~/.cache/...), JUMPSTARTER_FUZZ_OUT (afl-fuzz
# output; default: a temporary directory, removed afterwards), JUMPSTARTER_FUZZ_GROW_CORPUS=1
# adds new corpus entries to fuzz/corpus (for maintainers; CI keeps the committed corpus).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# The version of the `afl` crate in Cargo.lock; cargo-afl must match it.
AFL_VERSION=0.18.2
# Per-input limits: an input that takes longer, or a process that needs more memory, is a
# finding (a hang, or a crash), not a slow run.
INPUT_TIMEOUT_MS=1000
MEMORY_LIMIT_MB=1024

seconds=20
targets=()
build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) build_only=1; shift ;;
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(find fuzz/corpus -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
fi
say() { printf '[fuzz %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cache="${JUMPSTARTER_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/cargo-afl}"
root="$cache/$AFL_VERSION"
# cargo-afl keeps the AFL++ runtime it builds in its XDG data directory: keep it in the cache.
export XDG_DATA_HOME="$root/share"
export PATH="$root/bin:$PATH"
if ! [ -x "$root/bin/cargo-afl" ] || ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
  command -v cc >/dev/null || { say "FATAL: cargo-afl builds AFL++ with a C compiler (cc)"; exit 1; }
  say "installing cargo-afl $AFL_VERSION into $root"
  t=$(date +%s)
  cargo install cargo-afl --version "$AFL_VERSION" --locked --root "$root"
  say "cargo-afl installed in $(( $(date +%s) - t ))s"
fi
# The runtime is built per rustc version; build it when this toolchain has none yet.
if ! config="$(cargo afl config --build 2>&1)" && ! grep -q "already built" <<<"$config"; then
  printf '%s\n' "$config" >&2
  say "FATAL: cannot build the AFL++ runtime for this toolchain"
  exit 1
fi

# Instrumented build. cargo-afl forces one codegen unit per crate; at opt-level 1 the build
# costs about three quarters of opt-level 3's CPU time and the targets run as fast (the
# decoders are small). The instrumented artefacts (~700 MiB) live in the cache, apart from
# ordinary builds (their flags differ), so a later run rebuilds only the changed crates.
export AFL_OPT_LEVEL="${AFL_OPT_LEVEL:-1}"
export CARGO_TARGET_DIR="${JUMPSTARTER_FUZZ_TARGET_DIR:-$cache/target}"
unset CARGO_BUILD_BUILD_DIR
say "building the instrumented fuzzer (opt-level $AFL_OPT_LEVEL)"
t=$(date +%s)
cargo afl build --release --locked -p jumpstarter-fuzz --features afl --bin jumpstarter-fuzz
say "built in $(( $(date +%s) - t ))s"
binary="$CARGO_TARGET_DIR/release/jumpstarter-fuzz"
if [ "$build_only" = 1 ]; then exit 0; fi

out="${JUMPSTARTER_FUZZ_OUT:-}"
if [ -z "$out" ]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/jumpstarter-fuzz.XXXXXX")"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

# afl-fuzz without a terminal, on a shared machine: no UI, no CPU pinning, no checks of the
# CPU governor; crashes are seen by the fuzzer itself, so the core-dump handler may stay.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_FAST_CAL=1 AFL_NO_STARTUP_CALIBRATION=1

stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }
failed=()
report="target                execs      execs/s   corpus(seeds)  crashes  hangs"
for target in "${targets[@]}"; do
  seeds="fuzz/corpus/$target"
  [ -d "$seeds" ] || { say "FATAL: no corpus folder $seeds"; exit 1; }
  say "fuzzing $target for ${seconds}s"
  if ! cargo afl fuzz -i "$seeds" -o "$out/$target" -V "$seconds" -t "$INPUT_TIMEOUT_MS" \
      -m "$MEMORY_LIMIT_MB" -- "$binary" "$target" > "$out/$target.log" 2>&1; then
    tail -n 30 "$out/$target.log" >&2
    say "FATAL: afl-fuzz did not run $target"
    exit 1
  fi
  stats="$out/$target/default/fuzzer_stats"
  crashes=$(stat saved_crashes "$stats")
  hangs=$(stat saved_hangs "$stats")
  report="$report
$(printf '%-20s %8s %10s %8s(%s) %8s %6s' "$target" "$(stat execs_done "$stats")" \
    "$(stat execs_per_sec "$stats")" "$(stat corpus_count "$stats")" \
    "$(find "$seeds" -type f | wc -l)" "$crashes" "$hangs")"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    failed+=("$target")
    mkdir -p "fuzz/regressions/$target"
    for kind in crashes hangs; do
      for input in "$out/$target/default/$kind"/id:*; do
        [ -f "$input" ] || continue
        name="$kind-$(sha256sum "$input" | cut -c1-16)"
        cp "$input" "fuzz/regressions/$target/$name"
        say "$target: $kind input saved as fuzz/regressions/$target/$name"
      done
    done
  fi
  if [ "${JUMPSTARTER_FUZZ_GROW_CORPUS:-0}" = 1 ]; then
    for input in "$out/$target/default/queue"/id:*; do
      case "$input" in *orig:*) continue ;; esac
      cp "$input" "$seeds/found-$(sha256sum "$input" | cut -c1-16)"
    done
  fi
done
printf '%s\n' "$report" >&2
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}; replay with: cargo test -p jumpstarter-fuzz --test corpus"
  exit 1
fi
say "no crash and no hang in ${#targets[@]} targets (${seconds}s each)"
