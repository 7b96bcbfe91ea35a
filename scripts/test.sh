#!/usr/bin/env bash
# Sets everything up and runs every test: formatting, the unit and integration suites on the
# normal build, the whole suite again on an AddressSanitizer + UBSan build, the concurrency
# suites on a ThreadSanitizer build, and a short run of every libFuzzer target.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== clang-format"
files=$(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find gateway tests -name '*.[ch]pp')
clang-format --dry-run --Werror $files

echo "== build"
bash scripts/build.sh build
echo "== tests"
(cd build && ctest -j2 --output-on-failure --timeout 900)

echo "== build (ASan + UBSan)"
bash scripts/build.sh build-asan -DGATEWAY_SANITIZE=ON
echo "== tests (ASan + UBSan)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest -j2 --output-on-failure --timeout 900)

echo "== build (TSan)"
bash scripts/build.sh build-tsan -DGATEWAY_TSAN=ON
echo "== concurrency tests (TSan): single flight, pool, reload, drain, cluster lock"
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
(cd build-tsan && ctest --output-on-failure --timeout 900 -R '^(unit|test_tokens|test_operations|test_redis)$')

echo "== fuzz (20 s per target)"
bash scripts/fuzz.sh 20
