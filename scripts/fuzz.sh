#!/usr/bin/env bash
# Coverage-guided fuzzing of l4lb's parsers, pipeline, configuration check and
# control API (tests/fuzz, bodies in src/fuzz.rs) with libFuzzer via cargo-fuzz,
# on the stable toolchain (no sanitizer: the fuzzed code is safe Rust; debug
# assertions on, so overflows panic).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target SECONDS (default 5) from
#                                           the committed corpus; targets default
#                                           to parsers pipeline config control
#   FUZZ_JOBS=2 scripts/fuzz.sh 3600 pipeline      longer, in parallel
#
# New inputs go to target/fuzz-corpus/TARGET (add the interesting ones to
# tests/fuzz/corpus/TARGET with `cargo fuzz cmin`); a crash stops the run with
# its input in tests/fuzz/artifacts/TARGET/ and a nonzero exit. Needs cargo-fuzz
# (installed here from crates.io when missing) and a C++ compiler (libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parsers pipeline config control)
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz --version 0.13.2
fi
cargo fuzz build --fuzz-dir tests/fuzz -s none -O -a
jobs=()
[ -z "${FUZZ_JOBS:-}" ] || jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
for t in "${targets[@]}"; do
  scratch=target/fuzz-corpus/$t
  mkdir -p "$scratch"
  log=target/fuzz-corpus/$t.log
  echo "== fuzz $t, ${secs}s"
  status=0
  cargo fuzz run --fuzz-dir tests/fuzz -s none -O -a "$t" "$scratch" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${jobs[@]}" >"$log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$log" || true
  if [ "$status" != 0 ]; then
    grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact" "$log" | head -20 >&2 || true
    echo "fuzz $t: failed (exit $status); the log is $log, the input in tests/fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
