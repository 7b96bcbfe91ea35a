#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang with ASan+UBSan) and runs each for the
# given number of seconds (default 20) from its committed seed corpus. New inputs go to a
# scratch corpus under build-fuzz/, never into the committed seeds. A crash fails the run
# and leaves its reproducer in build-fuzz/crashes/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CXX=clang++ cmake -S tests/fuzz -B build-fuzz "${gen[@]}" >/dev/null
fi
cmake --build build-fuzz --parallel "$(nproc)"
mkdir -p build-fuzz/crashes
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for bin in build-fuzz/fuzz_*; do
  name=$(basename "$bin" | sed 's/^fuzz_//')
  seeds=tests/fuzz/corpus/$name
  work=build-fuzz/corpus/$name
  mkdir -p "$work"
  log=build-fuzz/$name.log
  if ! "$bin" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=8192 \
      -artifact_prefix=build-fuzz/crashes/"$name"- "$work" "$seeds" >"$log" 2>&1; then
    echo "fuzz $name: FAILED"
    tail -40 "$log"
    exit 1
  fi
  echo "fuzz $name: $(grep -Eo '#[0-9]+ +DONE.*' "$log" | tail -1 || tail -1 "$log")"
done
